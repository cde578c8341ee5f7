"""The kernel every package may import, and which imports none of them: settings, the error tree,
process and heap helpers. Third-party imports here are limited to pydantic and the standard
library, so a pure module that needs an error type or a settings section pulls in no I/O client.
"""
