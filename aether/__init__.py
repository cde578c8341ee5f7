"""AetherRec application shell: settings, the error tree, the embedded stack and the ``aether`` CLI.

``aether.settings`` and ``aether.errors`` are the shared kernel every package may import;
``aether.cli`` and ``aether.stack`` sit on top and nothing below imports them.
"""

__version__ = "0.1.0"
