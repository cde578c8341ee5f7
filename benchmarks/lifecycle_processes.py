"""``aether`` subcommands as child processes on the stores of one ``Settings``: the worker and the
server of ``aether bench lifecycle``, and of the integration tests that run the real worker.

``AetherProcess.start(settings, log_path, "serve", "--port", …)`` runs one long-lived subcommand
with its output in a log file; ``start_worker`` is the worker as the tests and the benchmark
want it (a metrics port, the catalogue agent on or off, extra environment). The environment is
``benchmarks.serve_server.child_env``: the same broker, Redis, Milvus, namespace and data folder
as ``settings``.

What the benchmark reads from them besides gRPC: a process's ``/metrics`` page
(``scrape_metrics``) and the stores the worker writes (``store_lookups``, for
``benchmarks.lifecycle_probes.StoreProbe``).
"""

from __future__ import annotations

import contextlib
import functools
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
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


def scrape_metrics(port: int, timeout_s: float = 10.0) -> str:
    """The ``/metrics`` page a process exports on ``port`` (loopback)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout_s) as page:
        return str(page.read().decode())


Lookup = Callable[[Sequence[str]], Iterable[str]]


@contextlib.contextmanager
def store_lookups(settings: Settings) -> Iterator[dict[str, Lookup]]:
    """Per store the worker writes, the ids among those asked that it holds: ``content_row``
    (the content collection, through the Milvus Lite server a running process holds) and
    ``online_row`` (the online item rows). Each is opened on its first call, in the thread that
    calls it."""
    from features.store import FeastOnlineStore
    from retrieval.content_index import ContentIndex

    opened = contextlib.ExitStack()

    @functools.cache
    def content() -> ContentIndex:
        return opened.enter_context(
            ContentIndex.from_settings(settings.milvus, settings.deployment)
        )

    @functools.cache
    def online() -> FeastOnlineStore:
        store = FeastOnlineStore(settings.redis, settings.deployment)
        opened.callback(store.close)
        return store

    with opened:
        yield {
            "content_row": lambda ids: [row.item_id for row in content().read(ids)],
            "online_row": lambda ids: list(online().read_items(ids)),
        }
