"""``aether serve`` runs the gRPC Recommender; ``aether recommend`` asks it, for humans.

``aether serve`` serves the (model, index) pair promoted in the registry (docs/lifecycle.md) and
swaps to a newly promoted one without a restart; on an empty deployment it serves popular and
fresh items (flagged as a fallback) until ``aether index`` promotes the first release.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from core.settings import MetricsSettings, load_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser("serve", help="run the gRPC Recommender service")
    serve.add_argument("--port", type=int, default=None, help="default: settings (50051)")
    serve.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="serve this ranker checkpoint (.pt) instead of the registry's promoted release",
    )
    serve.add_argument(
        "--embeddings",
        type=Path,
        default=None,
        help="serve these indexed item embeddings (.npz) instead of the registry's release",
    )
    serve.add_argument(
        "--refresh-s",
        type=float,
        default=5.0,
        help="how often the catalogue is re-read and the registry checked for a promoted release",
    )
    serve.add_argument(
        "--processes",
        type=int,
        default=None,
        help="server processes sharing the port (default: settings, 1)",
    )
    serve.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="Prometheus /metrics of server process i on this port + i (default: settings, "
        "9465; 0 = off; host: AETHER_METRICS__HOST)",
    )
    serve.set_defaults(func=run_serve)

    recommend = subparsers.add_parser("recommend", help="ask the running service for a slate")
    recommend.add_argument("--user", required=True, help="user id")
    recommend.add_argument("-k", type=int, default=10)
    recommend.add_argument("--address", default=None, help="host:port (default: settings)")
    recommend.add_argument("--context", action="append", default=[], metavar="KEY=VALUE")
    recommend.add_argument("--exclude", action="append", default=[], metavar="ITEM_ID")
    recommend.set_defaults(func=run_recommend)


def run_serve(args: argparse.Namespace) -> int:
    from core.metrics_exporter import SERVER_PORT, exporter_port
    from serving.processes import WorkerOptions, run_server, supervise

    settings = load_settings()
    updates = {"port": args.port, "processes": args.processes}
    updates = {key: value for key, value in updates.items() if value is not None}
    if updates:
        settings = settings.model_copy(
            update={"serving": settings.serving.model_copy(update=updates)}
        )
    if args.metrics_port is not None:
        metrics = MetricsSettings(host=settings.metrics.host, port=args.metrics_port)
        settings = settings.model_copy(update={"metrics": metrics})
    processes = settings.serving.processes
    options = WorkerOptions(
        checkpoint=args.checkpoint, embeddings=args.embeddings, refresh_s=args.refresh_s
    )

    def announce(port: int) -> None:
        group = f" ({processes} processes)" if processes > 1 else ""
        first = exporter_port(settings.metrics, SERVER_PORT)
        last = f"-{first + processes - 1}" if processes > 1 else ""
        metrics = f"; metrics on {settings.metrics.host}:{first}{last}" if first else ""
        print(
            f"serving aetherrec.v1.Recommender on {settings.serving.host}:{port}{group}{metrics}",
            flush=True,
        )

    if processes > 1:
        return supervise(settings, processes, options=options, on_ready=announce)
    run_server(settings, options, on_serving=lambda running: announce(running.port))
    return 0


def run_recommend(args: argparse.Namespace) -> int:
    from core.errors import SchemaError
    from serving.client import RecommenderClient

    settings = load_settings()
    address = args.address or f"{settings.serving.host}:{settings.serving.port}"
    context = {}
    for pair in args.context:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SchemaError(f"--context wants KEY=VALUE, got {pair!r}")
        context[key] = value
    with RecommenderClient(address, timeout_s=2.0) as client:
        slate = client.recommend(args.user, args.k, context=context, exclude_item_ids=args.exclude)
    flag = f"  (fallback: {', '.join(slate.fallback_reasons)})" if slate.fallback else ""
    print(f"request {slate.request_id} · model {slate.model_version}{flag}")
    for position, item in enumerate(slate.items, start=1):
        print(
            f"{position:>3}. {item.item_id:<12} {item.score:>9.3f}  [{item.source}] {item.explanation}"
        )
    return 0
