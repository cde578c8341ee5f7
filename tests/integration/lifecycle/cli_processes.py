"""Run ``aether`` subcommands as the README does: each its own process, on the test's stores.

Long-running ones (worker, serve) are ``benchmarks.lifecycle_processes.AetherProcess``, shared
with ``aether bench lifecycle`` and the other tests that run the real worker."""

from __future__ import annotations

import subprocess

from benchmarks.lifecycle_processes import AETHER, AetherProcess, start_worker, wait_until
from benchmarks.serve_server import child_env
from core.settings import Settings

Background = AetherProcess

__all__ = ["AETHER", "Background", "aether", "start_worker", "wait_until"]


def aether(settings: Settings, *argv: str, timeout_s: float = 600.0) -> str:
    """Run ``aether ARGV`` to completion; its output, or an assertion error with it."""
    done = subprocess.run(
        [AETHER, *argv],
        env=child_env(settings),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"aether {' '.join(argv)} exited {done.returncode}:\n{output}"
    return output
