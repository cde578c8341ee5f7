"""AetherRec's shell: the ``aether`` command line and the closed-loop demo.

The top of the layers (``docs/architecture.md``): it builds settings, wires adapters and starts
processes; nothing in the library imports it. The kernel it stands on is ``core``.
"""

__version__ = "0.1.0"
