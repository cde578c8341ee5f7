"""``aether dashboard``: the built-in operator page of the embedded default stack.

Serves http://127.0.0.1:8050/ (``--host``/``--port``): a status strip, the drift log read from
``<ns>.drift``, and charts drawn from the worker's and servers' Prometheus metrics, scraped every
``--interval`` seconds from the addresses the settings give them (``AETHER_METRICS__HOST`` /
``__PORT``; worker 9464, server 9465 + i; docs/metrics.md) or from ``--worker-metrics`` /
``--server-metrics``. ``/api/status`` has the same data as JSON; ``/metrics`` the page's own.
"""

from __future__ import annotations

import argparse
import logging
import sys

from aether.cli.common import run_standalone

log = logging.getLogger("aether.dashboard")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("dashboard", help="serve the operator page (metrics, drift)")
    add_arguments(parser)
    parser.set_defaults(func=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from dashboard.config import DEFAULT_PORT

    parser.add_argument("--namespace", help="override AETHER_NAMESPACE")
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"listen port (default {DEFAULT_PORT})"
    )
    parser.add_argument(
        "--worker-metrics",
        action="append",
        default=[],
        metavar="URL",
        help="a worker's /metrics URL (repeatable; default: from the settings, port 9464)",
    )
    parser.add_argument(
        "--server-metrics",
        action="append",
        default=[],
        metavar="URL",
        help="a server process's /metrics URL (repeatable; default: from the settings, 9465+i)",
    )
    parser.add_argument(
        "--interval", type=float, default=5.0, help="seconds between scrapes (default 5)"
    )
    parser.add_argument(
        "--no-topics",
        action="store_true",
        help="do not read the drift and impressions topics (no broker at hand)",
    )


def run(args: argparse.Namespace) -> int:
    from core.errors import ConfigError
    from core.settings import load_settings
    from dashboard.config import config_from_settings
    from dashboard.server import DashboardServer
    from dashboard.targets import explicit_targets

    if args.interval <= 0:
        raise ConfigError("--interval must be > 0")
    overrides = {"namespace": args.namespace} if args.namespace else {}
    settings = load_settings(**overrides)
    explicit = args.worker_metrics or args.server_metrics
    config = config_from_settings(
        settings,
        host=args.host,
        port=args.port,
        targets=explicit_targets(args.worker_metrics, args.server_metrics) if explicit else None,
        interval_s=args.interval,
        read_topics=not args.no_topics,
    )
    dashboard = DashboardServer(config).start()
    for target in config.targets:
        log.info("scraping %s at %s", target.name, target.url)
    print(f"aether dashboard: {dashboard.url}  (JSON: {dashboard.url}api/status)", flush=True)
    dashboard.serve_until_interrupted()
    return 0


if __name__ == "__main__":  # python -m aether.cli.dashboard
    sys.exit(run_standalone("aether dashboard", __doc__.splitlines()[0], add_arguments, run))
