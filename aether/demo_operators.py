"""The demo's operator view: the built-in dashboard over the demo's worker and server, the drift
log it shows at the end, and the worker's count of late events (``aether.demo``)."""

from __future__ import annotations

import time
from collections.abc import Callable

from core.errors import AetherError, DependencyUnavailable
from core.settings import Settings
from dashboard.config import DEFAULT_PORT, config_from_settings
from dashboard.drift_log import DriftEntry
from dashboard.server import DashboardServer
from dashboard.targets import explicit_targets, metrics_url


def start_operator_view(settings: Settings, worker_port: int, server_port: int) -> DashboardServer:
    """The built-in dashboard on 127.0.0.1:8050 (any free port when that one is taken),
    scraping the demo's worker and this process (the server) every 2 s."""
    targets = explicit_targets(
        [metrics_url("127.0.0.1", worker_port)], [metrics_url("127.0.0.1", server_port)]
    )
    for port in (DEFAULT_PORT, 0):
        config = config_from_settings(settings, port=port, targets=targets, interval_s=2.0)
        try:
            dashboard = DashboardServer(config).start()
        except DependencyUnavailable:
            continue  # 8050 is taken: any free port
        return dashboard
    raise DependencyUnavailable("dashboard", "no port to listen on")


def report_drift(
    dashboard: DashboardServer, injected_at_ms: int | None, say: Callable[[str], None]
) -> None:
    """The drift log as the operator page shows it, and whether the injected drift was seen."""

    def injected_caught() -> list[DriftEntry]:
        return [
            e
            for e in dashboard.state.drift.newest_first()
            if injected_at_ms is not None
            and e.detection.event_time_ms >= injected_at_ms
            and e.detection.signal == "event_share"
            and e.detection.segment == "event_type=dismiss"
        ]

    # The worker closes the injected round's event-time windows when the next round's events
    # arrive; the page reads <ns>.drift continuously. Give both a little time.
    deadline = time.monotonic() + 30
    while injected_at_ms is not None and not injected_caught() and time.monotonic() < deadline:
        time.sleep(1)
    entries = dashboard.state.drift.newest_first()
    say(f"      drift log ({len(entries)} newest detections, by event time; {dashboard.url}):")
    for entry in entries[:6]:
        d = entry.detection
        say(
            f"        {d.event_time:%Y-%m-%d %H:%M:%S}  {d.signal}[{d.segment}]"
            f"  {d.reference:.3g} → {d.statistic:.3g}  ({d.detector})"
        )
    if injected_at_ms is None:
        return
    caught = injected_caught()
    if caught:
        first = min(caught, key=lambda e: e.detection.event_time_ms)
        d = first.detection
        say(
            f"      injected drift detected: {d.signal}[{d.segment}] alarmed at event time"
            f" {d.event_time:%H:%M:%S}, {d.event_time_ms - injected_at_ms} ms (event time) after"
            f" the injected round began (ADWIN's estimate {d.reference:.3f} → {d.statistic:.3f})"
        )
    else:
        say("      the injected drift was NOT detected by the dismiss-share monitor within 30 s")


def worker_counters(metrics_port: int) -> dict[str, int] | None:
    """The worker's counters the demo reports, each summed over its labels (None: no answer):
    ``late`` (events beyond the allowed lateness, every topic), ``decided`` and ``rewarded``
    (shown slots that reward attribution decided, and those clicked)."""
    from dashboard.scrape import counter_totals

    names = {
        "late": "aether_stream_late_events_total",
        "decided": "aether_bandit_impressions_total",
        "rewarded": "aether_bandit_rewards_total",
    }
    try:
        return counter_totals(metrics_url("127.0.0.1", metrics_port), names)
    except AetherError:
        return None
