"""``aether bench serve --floor``: what a Python gRPC server costs per ``Recommend`` call when the
answer costs nothing — the floor under the pipeline's CPU per request.

``python -m benchmarks.serve_floor`` (the server child) answers every ``Recommend`` with one
constant 10-item ``RecommendResponse`` of this repository's proto (``floor_slate``), with
``aether serve``'s server settings (``serving.max_workers`` worker threads, ``max_concurrent_rpcs``,
the message-size caps; from the environment as ``aether serve`` reads them), a health service
(the benchmark waits on it) and a Prometheus endpoint (answers counted, CPU by thread name).
Two variants:

* ``bare``: a ``grpc.server`` whose Recommend handler returns the prebuilt response (gRPC still
  parses each request and serializes the response) — the floor issue 19 cites;
* ``servicer``: ``serving.server.start_server`` (the status, auth and error interceptors, request
  validation, proto mapping) around a pipeline that returns a constant slate: the production
  server without the pipeline;
* ``aio``: ``bare`` on ``grpc.aio`` (one asyncio loop, a coroutine handler, no thread pool): what
  the server would cost per call without the sync server's hand-off from its polling thread to a
  worker thread (issue 19 asks to measure ``grpc.aio`` against the thread pool).

The benchmark needs no stores (no Redis, Kafka or Milvus): it starts the child, warms it up, and
loads it at each offered rate as ``aether bench serve`` loads the real server
(``serve_measure``); CPU per request is the child's CPU over the calls its handler answered.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import core.metrics_exporter  # noqa: F401  - first: prometheus_client in its ordinary mode
from benchmarks.serve_server import ServerProcess, start_on_free_ports
from serving.domain import RecommendationQuery, Slate, SlateItem

if TYPE_CHECKING:
    from benchmarks.serve_measure import LoadPlan

VARIANTS = ("bare", "servicer", "aio")


def floor_slate(k: int = 10) -> Slate:
    """The constant answer: ``k`` items shaped like the pipeline's (ids, scores, sources,
    explanations, propensities)."""
    sources = ("ann", "cooccurrence", "popular", "fresh", "explore")
    return Slate(
        request_id="00000000-0000-4000-8000-000000000000",
        items=tuple(
            SlateItem(
                item_id=str(1000 + n),
                score=1.0 - n / 100,
                source=sources[n % len(sources)],
                explanation=f"because you watched Movie {2000 + n} (1995)",
                propensity=0.9,
            )
            for n in range(k)
        ),
        model_version="floor",
    )


class ConstantPipeline:
    """A ``serving.servicer.RecommendPipeline`` that answers ``floor_slate`` and counts."""

    def __init__(self, answered: Any) -> None:
        self._slate = floor_slate()
        self._answered = answered

    def recommend(self, query: RecommendationQuery, *, deadline_s: float | None) -> Slate:
        self._answered.inc()
        return self._slate


# -- the server child -------------------------------------------------------------------------------
def serve(variant: str, port: int, metrics_port: int) -> None:
    """Serve the floor on 127.0.0.1:``port`` until SIGINT/SIGTERM."""
    if variant == "aio":
        import asyncio

        asyncio.run(serve_aio(port, metrics_port))
        return
    from concurrent import futures

    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc
    from prometheus_client import REGISTRY, Counter

    from benchmarks.serve_server import ThreadCpuCollector
    from core.heap import freeze_startup_heap
    from core.metrics_exporter import start_metrics_exporter
    from core.settings import MetricsSettings, load_settings
    from serving.proto import recommender_pb2_grpc as pb_grpc
    from serving.server import RunningServer, serve_forever, server_options, start_server
    from serving.servicer import slate_to_proto

    answered = Counter("aether_bench_floor_answers", "Recommend calls the floor's handler answered")
    limits = load_settings().serving.model_copy(update={"host": "127.0.0.1", "port": port})
    if variant == "servicer":
        running = start_server(ConstantPipeline(answered), limits)
    else:
        response = slate_to_proto(floor_slate())

        class Floor(pb_grpc.RecommenderServicer):
            def Recommend(self, request: Any, context: Any) -> Any:
                answered.inc()
                return response

        # As serving.server.start_server builds it, less the interceptors and reflection.
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=limits.max_workers, thread_name_prefix="grpc"),
            maximum_concurrent_rpcs=limits.max_concurrent_rpcs,
            options=server_options(),
        )
        pb_grpc.add_RecommenderServicer_to_server(Floor(), server)
        health_servicer = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        bound = server.add_insecure_port(f"{limits.host}:{port}")
        server.start()
        health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        running = RunningServer(server=server, port=bound, health=health_servicer)
    REGISTRY.register(ThreadCpuCollector())
    start_metrics_exporter(
        MetricsSettings(host="127.0.0.1", port=metrics_port), default_port=metrics_port
    )
    freeze_startup_heap()  # as serving.processes.run_server does
    print(f"floor ({variant}) serving on {running.address}", flush=True)
    serve_forever(running, grace_s=2.0)


async def serve_aio(port: int, metrics_port: int) -> None:
    """The ``bare`` floor on ``grpc.aio``, until SIGINT/SIGTERM."""
    import asyncio
    import signal

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_health.v1.health import aio as health_aio
    from prometheus_client import REGISTRY, Counter

    from benchmarks.serve_server import ThreadCpuCollector
    from core.heap import freeze_startup_heap
    from core.metrics_exporter import start_metrics_exporter
    from core.settings import MetricsSettings, load_settings
    from serving.proto import recommender_pb2_grpc as pb_grpc
    from serving.server import server_options
    from serving.servicer import slate_to_proto

    answered = Counter("aether_bench_floor_answers", "Recommend calls the floor's handler answered")
    limits = load_settings().serving
    response = slate_to_proto(floor_slate())

    class Floor(pb_grpc.RecommenderServicer):
        async def Recommend(self, request: Any, context: Any) -> Any:  # type: ignore[override]
            answered.inc()
            return response

    server = grpc.aio.server(
        maximum_concurrent_rpcs=limits.max_concurrent_rpcs,
        options=server_options(),
    )
    pb_grpc.add_RecommenderServicer_to_server(Floor(), server)
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    REGISTRY.register(ThreadCpuCollector())
    start_metrics_exporter(
        MetricsSettings(host="127.0.0.1", port=metrics_port), default_port=metrics_port
    )
    freeze_startup_heap()
    print(f"floor (aio) serving on 127.0.0.1:{bound}", flush=True)
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopped.set)
    await stopped.wait()
    await server.stop(2.0)


def start_floor(variant: str, log_path: Path, timeout_s: float = 60) -> ServerProcess:
    """The floor's server child, serving."""

    def launch(port: int, metrics_ports: list[int]) -> ServerProcess:
        argv = [sys.executable, "-m", "benchmarks.serve_floor", "--variant", variant]
        argv += ["--port", str(port), "--metrics-port", str(metrics_ports[0])]
        return ServerProcess.launch(argv, port, metrics_ports, log_path)

    return start_on_free_ports(launch, exporters=1, timeout_s=timeout_s)


# -- the benchmark ------------------------------------------------------------------------------
def measure_floor(variant: str, plan: LoadPlan, warmup_seconds: float, seed: int) -> dict[str, Any]:
    """The floor server ``variant`` warmed up, left idle 3 s, then loaded at each rate of
    ``plan`` (a ``serve_measure.LoadPlan``): its idle and per-rate figures."""
    from benchmarks.serve_load import request_users
    from benchmarks.serve_measure import FLOOR, measure_rates, warm_up_and_idle

    users = [f"floor-user-{n}" for n in range(1000)]  # the floor ignores the request
    plan.work.mkdir(parents=True, exist_ok=True)
    server = start_floor(variant, plan.work / "floor.log")
    try:
        print(f"floor server ({variant}) pid {server.process.pid} at {server.address}")
        warmup = request_users(users, int(50 * warmup_seconds), 0.0, seed + 999)
        warm, idle = warm_up_and_idle(server, warmup, plan)
        print(f"warm-up: {dict(warm.codes)}; idle floor server (3 s, no requests): {idle}")
        load_before = os.getloadavg()[0]
        measured = measure_rates(server, users, plan, FLOOR)
        load_after = os.getloadavg()[0]
    finally:
        server.stop()
    return {
        **idle,
        "loadavg_1m_before": round(load_before, 2),
        "loadavg_1m_after": round(load_after, 2),
        **measured.figures,
    }


def floor_command(args: argparse.Namespace) -> int:
    """``aether bench serve --floor VARIANT``: the floor server at each offered rate."""
    from benchmarks.machine import machine_description
    from benchmarks.serve_h2load import h2load_executable
    from benchmarks.serve_measure import LoadPlan, h2load_settings, print_table, within_target
    from core.heap import freeze_startup_heap
    from core.settings import load_settings

    if args.load == "h2load":
        h2load_executable()  # fail before starting anything
    limits = load_settings().serving
    work = Path(tempfile.mkdtemp(prefix="aether-bench-floor-"))
    channels = args.channels or 1
    plan = LoadPlan.from_args(args, channels, work)
    try:
        freeze_startup_heap()
        figures = measure_floor(args.floor, plan, args.warmup_seconds, args.seed)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    machine = machine_description()
    result = {
        "floor": args.floor,
        "load_generator": args.load,
        "max_rps_within_20ms_p99": max(within_target(plan.rates, figures), default=0),
        "offered_rates": plan.rates,
        "seconds_per_rate": args.seconds,
        "k": args.k,
        "serving_max_workers": limits.max_workers,
        "serving_max_concurrent_rpcs": limits.max_concurrent_rpcs,
        "client_connections": channels,
        **h2load_settings(plan),
        **figures,
        "machine": machine,
        "note": f"load generator shares the {os.cpu_count()} cores with the server",
    }
    print_table(plan.rates, figures)
    print(f"floor ({args.floor}), load {args.load}; machine: {machine}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serve_floor")
    parser.add_argument("--variant", choices=VARIANTS, default="bare")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    args = parser.parse_args(argv)
    # INFO: the exporter's ``LISTENING`` line, which start_floor waits for
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    serve(args.variant, args.port, args.metrics_port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
