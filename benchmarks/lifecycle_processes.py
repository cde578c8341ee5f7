"""``aether`` subcommands as child processes on the stores of one ``Settings``: the worker and the
server of ``aether bench lifecycle``, and of the integration tests that run the real worker.

``AetherProcess.start(settings, log_path, "serve", "--port", …)`` runs one long-lived subcommand
with its output in a log file; ``start_worker`` is the worker as the tests and the benchmark
want it (a metrics port, the catalogue agent on or off, extra environment). The environment is
``benchmarks.serve_server.child_env``: the same broker, Redis, Milvus, namespace and data folder
as ``settings``.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from benchmarks.serve_server import child_env
from core.settings import Settings

AETHER = str(Path(sys.executable).parent / "aether")


@dataclass
class AetherProcess:
    """A long-running ``aether`` process (worker, serve) with its log file."""

    process: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def start(
        cls,
        settings: Settings,
        log_path: Path,
        *argv: str,
        env: Mapping[str, str] | None = None,
    ) -> AetherProcess:
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [AETHER, *argv],
                env={**child_env(settings), **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return cls(process, log_path)

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, chars: int = 4000) -> str:
        return self.log()[-chars:]

    def wait_for_log(self, pattern: str, timeout_s: float = 180.0) -> re.Match[str]:
        """The first match of ``pattern`` in the log; an assertion error (with the log) when the
        process exits or ``timeout_s`` passes first."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = re.search(pattern, self.log())
            if found:
                return found
            assert self.running, f"exited {self.process.returncode}:\n{self.log_tail()}"
            assert time.monotonic() < deadline, f"no {pattern!r} in:\n{self.log_tail()}"
            time.sleep(0.5)

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout_s``; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL (the worker's state is crash-safe; a graceful Faust shutdown takes seconds)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def start_worker(
    settings: Settings,
    log_path: Path,
    *,
    metrics_port: int = 0,
    embed_catalogue: bool = False,
    env: Mapping[str, str] | None = None,
) -> AetherProcess:
    """``aether worker`` on ``settings``' stores. ``embed_catalogue``: the catalogue agent embeds
    each catalogue update with MiniLM into the content collection (seconds of CPU to load the
    model, so off unless a test or benchmark needs new items in Milvus)."""
    extra = {"AETHER_STREAM__EMBED_CATALOGUE": "true" if embed_catalogue else "false"}
    return AetherProcess.start(
        settings,
        log_path,
        "worker",
        "--metrics-port",
        str(metrics_port),
        env={**extra, **(env or {})},
    )


def wait_until(predicate: Callable[[], bool], what: str, timeout_s: float = 180.0) -> None:
    """Poll ``predicate`` every half second; an assertion error after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)
