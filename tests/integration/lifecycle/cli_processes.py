"""Run ``aether`` subcommands as the README does: each its own process, on the test's stores."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.serve_server import child_env
from core.settings import Settings

AETHER = str(Path(sys.executable).parent / "aether")


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


@dataclass
class Background:
    """A long-running ``aether`` process (worker, serve) with its log file."""

    process: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def start(
        cls, settings: Settings, log_path: Path, *argv: str, env: dict[str, str] | None = None
    ) -> Background:
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [AETHER, *argv],
                env={**child_env(settings), **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return cls(process, log_path)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, pattern: str, timeout_s: float = 180.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout_s
        while True:
            found = re.search(pattern, self.log())
            if found:
                return found
            assert self.process.poll() is None, f"exited {self.process.returncode}:\n{self.log()}"
            assert time.monotonic() < deadline, f"no {pattern!r} in:\n{self.log()[-4000:]}"
            time.sleep(0.5)

    def stop(self, timeout_s: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode


def wait_until(predicate: Callable[[], bool], what: str, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)
