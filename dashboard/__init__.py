"""``aether dashboard``: the built-in operator page of the embedded default stack."""
