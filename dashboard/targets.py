"""Which ``/metrics`` the dashboard scrapes, from the same settings the processes read.

Each process computes its exporter's address from ``core.settings.MetricsSettings``
(``core.metrics_exporter``): the worker on 9464, server process ``i`` on 9465 + ``i``, unless
``AETHER_METRICS__PORT`` says otherwise. The dashboard applies the same rule to the same
environment, so with no settings at all it finds the embedded default's processes; anything else
is given explicitly (``aether dashboard --worker-metrics URL --server-metrics URL``).
"""

from __future__ import annotations

from core.metrics_exporter import SERVER_PORT, WORKER_PORT, exporter_port
from core.settings import MetricsSettings
from dashboard.scrape import ScrapeTarget

# A process listening on every interface is reached over loopback.
_WILDCARDS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}


def metrics_url(host: str, port: int) -> str:
    host = _WILDCARDS.get(host, host)
    return f"http://[{host}]:{port}/metrics" if ":" in host else f"http://{host}:{port}/metrics"


def default_targets(
    metrics: MetricsSettings, server_processes: int = 1
) -> tuple[ScrapeTarget, ...]:
    """The worker and each server process; none whose exporter is off (port 0), no URL twice."""
    candidates = [("worker", exporter_port(metrics, WORKER_PORT))] + [
        (f"server-{i}", exporter_port(metrics, SERVER_PORT, i)) for i in range(server_processes)
    ]
    targets: list[ScrapeTarget] = []
    seen: set[str] = set()
    for name, port in candidates:
        url = metrics_url(metrics.host, port)
        if port and url not in seen:
            seen.add(url)
            targets.append(ScrapeTarget(name, url))
    return tuple(targets)


def explicit_targets(worker_urls: list[str], server_urls: list[str]) -> tuple[ScrapeTarget, ...]:
    return tuple(
        [
            ScrapeTarget("worker" if len(worker_urls) == 1 else f"worker-{i}", u)
            for i, u in enumerate(worker_urls)
        ]
        + [ScrapeTarget(f"server-{i}", u) for i, u in enumerate(server_urls)]
    )
