"""``aether worker``: run the stream worker (Faust) of one namespace until stopped.

Creates the namespace's topics if missing, writes features through the Feast/Redis online store
(``features.store.FeastOnlineStore``), the offline log, item transitions and bandit posteriors
(``streams.build_worker``), handles privacy requests, and serves Prometheus metrics on
``--metrics-port`` (default: settings ``AETHER_METRICS__HOST`` / ``__PORT``, 127.0.0.1:9464;
docs/metrics.md).
Run several workers with the same namespace to share the partitions of one consumer group.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from aether.cli.common import run_standalone
from core.heap import collect_young_less_often, freeze_startup_heap
from core.metrics_exporter import WORKER_PORT, start_metrics_exporter
from core.settings import MetricsSettings, load_settings

log = logging.getLogger("aether.worker")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("worker", help="run the stream worker (Faust agents)")
    add_arguments(parser)
    parser.set_defaults(func=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--namespace", help="override AETHER_NAMESPACE")
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus /metrics on this port (default: settings, 9464; 0 = off; "
        "host: AETHER_METRICS__HOST)",
    )
    parser.add_argument("--loglevel", default="warning", help="Faust log level")
    parser.add_argument(
        "--faust-floor",
        action="store_true",
        help="benchmarking only: consume the events topic and count, nothing else",
    )


def run(args: argparse.Namespace) -> int:
    from streams.app import create_app, create_floor_app
    from streams.build_worker import build_runtimes
    from streams.topics import ensure_topics
    from streams.worker_metrics import observe_gc_pauses

    observe_gc_pauses()
    overrides = {"namespace": args.namespace} if args.namespace else {}
    settings = load_settings(**overrides)
    if args.metrics_port is not None:
        metrics = MetricsSettings(host=settings.metrics.host, port=args.metrics_port)
        settings = settings.model_copy(update={"metrics": metrics})
    ensure_topics(settings)
    if args.faust_floor:
        start_metrics_exporter(settings.metrics, default_port=WORKER_PORT)
        return _execute(create_floor_app(settings), args.loglevel)
    runtime, bandit, drift = build_runtimes(settings)
    start_metrics_exporter(settings.metrics, default_port=WORKER_PORT)
    app = create_app(settings, runtime, bandit, drift)
    log.info("worker %s consuming %s", settings.consumer_group, settings.kafka.bootstrap_servers)
    try:
        return _execute(app, args.loglevel)
    finally:
        runtime.close()


def _execute(app: Any, loglevel: str) -> int:
    worker = worker_class()(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
    return 0


def worker_class() -> type:
    """Faust's ``Worker``, less its terminal spinner, and freezing the start-up heap."""
    import faust

    class Worker(faust.Worker):  # type: ignore[misc]
        def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
            # Faust's spinner turns on every log record, so at WARNING (ours) it adds a handler
            # and sets the root logger to DEBUG: then every debug call of aiokafka, Faust and
            # mode in the consume loop builds a record and runs the handlers, for a spinner that
            # stops once the worker has started. Without it the root keeps ``loglevel``.
            self.spinner = None
            super().on_setup_root_logger(logger, level)

        async def on_startup_finished(self) -> None:
            await super().on_startup_finished()
            # Everything built so far lives as long as the worker (core.heap).
            log.info("%d start-up objects out of the collector's reach", freeze_startup_heap())
            collect_young_less_often()

    return Worker


if __name__ == "__main__":  # python -m aether.cli.worker
    sys.exit(run_standalone("aether worker", __doc__.splitlines()[0], add_arguments, run))
