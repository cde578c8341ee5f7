"""Several server processes on one port, each with its own pipeline (``serving.processes``).

Why: the pipeline is Python, so one process is bound by its GIL to about one core whatever its
thread count (docs/benchmarks/serving.md). ``serving.processes = N`` (default 1) makes
``aether serve`` a small supervisor that starts ``N`` worker processes (``spawn``: fresh
interpreters, no forked gRPC or Kafka state). Each worker builds its own pipeline
(``serving.build_pipeline.build_serving_app``) and binds the same port with ``SO_REUSEPORT``
(gRPC's ``grpc.so_reuseport``); the kernel spreads *connections* over the workers. One HTTP/2
connection stays on one worker, so a single client channel is served by one process: a busy
client should open several channels (``grpc.use_local_subchannel_pool`` keeps them apart).

``run_server`` is the one way a server runs: ``aether serve`` in one process, each worker of a
group (``serve_worker``), and the benchmark's server (``benchmarks.serve_server.BenchWorker``).

Metrics: each server process exports its own (``core.metrics_exporter``), worker ``i`` on
``settings.metrics.port + i`` (default 9465, 9466, …), so Prometheus scrapes one target per
process and sums them in PromQL; the supervisor serves no requests and exports nothing.

Milvus Lite (a local file) can be opened by one process only: the first ``MilvusClient`` on the
file starts a local ``milvus`` server on a Unix socket and holds the file's lock. The server holds
it (``retrieval.milvus_lite.hold_milvus_lite``) and advertises that socket, so other processes
(``aether index``, ``aether registry``) reach the file while it serves; with several workers the
supervisor holds it and hands the workers the socket (``unix:///…``), so they are plain clients
of one Milvus server, as they would be of a Milvus standalone or cluster (a ``http(s)://`` URI,
which is passed through unchanged).

Shutdown: SIGINT/SIGTERM to the supervisor is forwarded to every worker as SIGTERM; each worker
drains its in-flight calls (``RunningServer.stop(grace)``), closes its app and exits; workers
still alive after the grace are killed, then Milvus Lite is released. A worker that dies on its
own stops the whole group with a non-zero exit, so a process manager restarts it cleanly.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import ConfigError, DependencyUnavailable
from core.heap import freeze_startup_heap
from core.metrics_exporter import SERVER_PORT, start_metrics_exporter
from core.settings import Settings
from core.subprocesses import free_loopback_port
from retrieval.milvus_lite import hold_milvus_lite

if TYPE_CHECKING:
    from serving.build_pipeline import ServingApp
    from serving.server import RunningServer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerOptions:
    """How each server is built (picklable: it crosses the ``spawn`` boundary)."""

    checkpoint: Path | None = None
    embeddings: Path | None = None
    refresh_s: float | None = 5.0  # catalogue refresh period; None: no refresh
    grace_s: float = 5.0
    # Serving time stamped on impressions; None: the wall clock. A replay of past event time
    # passes its own (``benchmarks.replay_clock.FileClock``), as the demo does in process.
    clock_ms: Callable[[], int] | None = None


def run_server(
    settings: Settings,
    options: WorkerOptions,
    *,
    reuse_port: bool = False,
    process_index: int = 0,
    prepare: Callable[[ServingApp], None] | None = None,
    on_serving: Callable[[RunningServer], None] | None = None,
) -> None:
    """Build the pipeline, serve it on ``settings.serving`` until SIGINT/SIGTERM, then drain and
    close. The one way a server runs: ``aether serve`` in one process, each worker of a group,
    and the benchmark's server (which adds instruments in ``prepare``). Metrics are exported
    once the gRPC port serves, on ``settings.metrics`` shifted by ``process_index``. A Milvus
    Lite file is held and shared for as long as the server runs, so ``aether index`` and
    ``aether registry promote`` can reach it meanwhile (``retrieval.milvus_lite``)."""
    with hold_milvus_lite(settings.milvus.uri) as milvus_uri:
        shared = settings.model_copy(
            update={"milvus": settings.milvus.model_copy(update={"uri": milvus_uri})}
        )
        _run_app(shared, options, reuse_port, process_index, prepare, on_serving)


def _run_app(
    settings: Settings,
    options: WorkerOptions,
    reuse_port: bool,
    process_index: int,
    prepare: Callable[[ServingApp], None] | None,
    on_serving: Callable[[RunningServer], None] | None,
) -> None:
    from serving.build_pipeline import build_serving_app
    from serving.server import serve_forever, start_server

    clock = {} if options.clock_ms is None else {"clock_ms": options.clock_ms}
    app = build_serving_app(
        settings, checkpoint=options.checkpoint, embeddings=options.embeddings, **clock
    )
    try:
        if prepare is not None:
            prepare(app)
        # The model, stores and clients live as long as the server: keep the collector's full
        # passes off them, or each one stalls every request in flight (core.heap).
        log.info("%d start-up objects out of the collector's reach", freeze_startup_heap())
        if options.refresh_s:
            app.start_refreshing(options.refresh_s)
        running = start_server(app.pipeline, settings.serving, reuse_port=reuse_port)
        start_metrics_exporter(settings.metrics, default_port=SERVER_PORT, offset=process_index)
        if on_serving is not None:
            on_serving(running)
        serve_forever(running, grace_s=options.grace_s)
    finally:
        app.close()


# A worker: (settings, worker index, options, ready) -> returns when the worker has stopped.
# ``ready()`` must be called once the gRPC port is bound and serving. Spawned, so it must be
# picklable: a module-level function, or an instance of a module-level class.
Worker = Callable[[Settings, int, WorkerOptions, Callable[[], None]], None]


def serve_worker(
    settings: Settings, index: int, options: WorkerOptions, ready: Callable[[], None]
) -> None:
    """``aether serve``'s worker: ``run_server`` on the shared port, metrics on its own."""
    run_server(
        settings, options, reuse_port=True, process_index=index, on_serving=lambda _: ready()
    )


def _worker_main(
    worker: Worker,
    settings: Settings,
    index: int,
    options: WorkerOptions,
    ready_queue: Any,
) -> None:
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s worker-{index} %(levelname)s %(name)s: %(message)s"
    )
    worker(settings, index, options, lambda: ready_queue.put(index))


@dataclass
class WorkerGroup:
    """The running workers of one supervisor."""

    processes: list[Any]
    port: int

    def alive(self) -> list[Any]:
        return [p for p in self.processes if p.is_alive()]

    def stop(self, grace_s: float) -> None:
        for process in self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s + 10.0  # drain, then close the app (Kafka flush)
        for process in self.processes:
            process.join(max(0.0, deadline - time.monotonic()))
        for process in self.alive():
            log.warning("worker pid %d did not stop in time: killed", process.pid)
            process.kill()
            process.join(5)


def start_workers(
    settings: Settings,
    processes: int,
    *,
    worker: Worker = serve_worker,
    options: WorkerOptions | None = None,
    start_timeout_s: float = 300.0,
    cancel: threading.Event | None = None,
) -> WorkerGroup:
    """Start ``processes`` workers on ``settings.serving.port`` (0: a free port is chosen) and
    return once every one of them serves. ``settings.milvus.uri`` must already be shareable
    (see ``hold_milvus_lite``). ``cancel`` set while they start: stop them and raise."""
    if processes < 1:
        raise ConfigError(f"serving.processes must be >= 1, got {processes}")
    port = settings.serving.port or free_loopback_port(settings.serving.host, reuse_port=True)
    settings = settings.model_copy(
        update={"serving": settings.serving.model_copy(update={"port": port})}
    )
    context = multiprocessing.get_context("spawn")
    ready_queue = context.Queue()
    group = WorkerGroup([], port)
    for index in range(processes):
        process = context.Process(
            target=_worker_main,
            args=(worker, settings, index, options or WorkerOptions(), ready_queue),
            name=f"aether-serve-{index}",
            daemon=False,
        )
        process.start()
        group.processes.append(process)
    ready: set[int] = set()
    deadline = time.monotonic() + start_timeout_s
    try:
        while len(ready) < processes:
            if cancel is not None and cancel.is_set():
                raise DependencyUnavailable("recommender", "stopped while starting")
            if len(group.alive()) < processes or time.monotonic() > deadline:
                raise DependencyUnavailable(
                    "recommender", f"{processes - len(ready)} worker(s) did not start"
                )
            with contextlib.suppress(queue.Empty):
                ready.add(ready_queue.get(timeout=0.5))
    except BaseException:
        group.stop(grace_s=0.0)
        raise
    return group


def supervise(
    settings: Settings,
    processes: int,
    *,
    worker: Worker = serve_worker,
    options: WorkerOptions | None = None,
    on_ready: Callable[[int], None] | None = None,
) -> int:
    """Run ``processes`` workers until SIGINT/SIGTERM (exit 0) or until one dies (exit 1)."""
    options = options or WorkerOptions()
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    with hold_milvus_lite(settings.milvus.uri) as milvus_uri:
        shared = settings.model_copy(
            update={"milvus": settings.milvus.model_copy(update={"uri": milvus_uri})}
        )
        group = start_workers(shared, processes, worker=worker, options=options, cancel=stopped)
        log.info("%d server processes on port %d (SO_REUSEPORT)", processes, group.port)
        if on_ready is not None:
            on_ready(group.port)
        code = 0
        try:
            while not stopped.wait(0.5):
                if len(group.alive()) < processes:
                    dead = [p.pid for p in group.processes if not p.is_alive()]
                    log.error("server worker(s) %s exited: stopping the group", dead)
                    code = 1
                    break
        finally:
            log.info("shutting down %d server processes", processes)
            group.stop(options.grace_s)
    return code
