"""A serving clock a replay sets from another process: ``aether bench live`` runs its servers as
child processes (``benchmarks.live_server --clock-file``) and moves their serving time to each
request's event time before asking (``benchmarks.live_replay.replay``'s ``set_clock``)."""

from __future__ import annotations

import contextlib
from pathlib import Path


class FileClock:
    """Serving time in epoch ms, read from a file the replay rewrites before each request
    (``write_clock``); the last value read while the file is missing or being replaced."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._last_ms = 0

    def __call__(self) -> int:
        with contextlib.suppress(OSError, ValueError):
            self._last_ms = int(self.path.read_text())
        return self._last_ms


def write_clock(path: Path, now_ms: int) -> None:
    """Set a ``FileClock``'s time (atomically: a reader sees the old or the new value)."""
    staged = path.with_name(path.name + ".tmp")
    staged.write_text(str(int(now_ms)))
    staged.replace(path)
