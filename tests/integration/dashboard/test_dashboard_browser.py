"""``aether dashboard`` in a real headless Chromium (Debian's ``chromium``), against real services.

The dashboard scrapes real ``/metrics`` pages (prometheus_client exporters shaped like the worker
and a server, ``dashboard_processes``), reads a real Tansu broker where the test publishes served
slates on ``<ns>.impressions`` and a drift detection on ``<ns>.drift``, and the browser loads the
page: the DOM it builds must hold charts drawn from the data and the injected drift in the log.
"""

from __future__ import annotations

import dataclasses
import random
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from browser import Dom, dump_dom, wait_for_status
from dashboard_processes import (
    ARMS,
    EVENT_TYPES,
    SOURCES,
    ServerMetrics,
    WorkerMetrics,
    create_topics,
    publish,
)

from core.settings import Settings
from dashboard.config import config_from_settings
from dashboard.scrape import ScrapeTarget, parse_exposition
from dashboard.server import DashboardServer
from events.models import DriftDetection, Impression, ImpressionItem

pytestmark = pytest.mark.integration

# Markup in a field published by any Kafka client: the browser must show it as text.
INJECTED_SEGMENT = "arm=treatment<b>injected</b>"
INJECTED_ID = "drift-ctr-treatment-injected"


# -- services ------------------------------------------------------------------------------------


def slates(rng: random.Random, count: int) -> list[tuple[str, str]]:
    """Served slates with a Zipf-like popularity, the shape exposure deciles are made for."""
    records = []
    for n in range(count):
        items = tuple(
            ImpressionItem(
                item_id=f"i{min(int(rng.paretovariate(1.0)), 500)}-{k if n % 7 == 0 else 0}",
                position=k,
                score=1.0,
                source=SOURCES[k % len(SOURCES)],
                propensity=1.0,
            )
            for k in range(10)
        )
        impression = Impression(
            request_id=f"r{n}",
            user_id=f"u{n % 50}",
            items=items,
            model_version="sasrec-v7",
            experiment_arm=ARMS[n % 2],
            event_time=1_790_000_000_000 + n,
        )
        records.append((impression.user_id, impression.model_dump_json()))
    return records


@pytest.fixture
def running(kafka_bootstrap: str, namespace: str) -> Iterator[tuple[DashboardServer, Settings]]:
    settings = Settings(namespace=namespace, KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap)
    create_topics(settings, [settings.topic("drift"), settings.topic("impressions")])
    worker, server = WorkerMetrics(namespace), ServerMetrics()
    worker.serve()
    server.serve()
    targets = (
        ScrapeTarget("worker", worker.url),
        ScrapeTarget("server-0", server.url),
        ScrapeTarget("server-1", "http://127.0.0.1:9/metrics"),  # a process that is down
    )
    config = dataclasses.replace(
        config_from_settings(settings, port=0, targets=targets, interval_s=5.0),
        exposure_reference_slots=1_000,
        exposure_window_slots=1_000,
    )
    # The test stamps the rounds (5 s apart) and scrapes when it has moved the processes on;
    # the page's own scrape loop then adds nothing (its rounds would be out of order).
    clock = FakeClock(time.time() + 3600)
    dashboard = DashboardServer(config, clock=clock).start()
    rng = random.Random(16)
    try:
        for step in range(14):
            clock.now += 5.0
            treatment_ctr = 0.05 if step < 8 else 0.03  # the CTR drop the detector catches
            worker.advance(rng, ctr={"control": 0.05, "treatment": treatment_ctr})
            server.advance(rng, score_mean=1.0 if step < 8 else 1.4)
            if step == 10:
                worker.detect("ctr", "arm=treatment")
            dashboard.scrape_once()
        yield dashboard, settings
    finally:
        dashboard.stop()
        worker.close()
        server.close()


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_page_in_chromium_shows_charts_with_data_and_the_injected_drift(
    chromium: str, running: tuple[DashboardServer, Settings], tmp_path: Path
) -> None:
    dashboard, settings = running
    publish(settings, settings.topic("impressions"), slates(random.Random(7), 300))
    detected_at = datetime(2026, 11, 22, 10, 30, tzinfo=UTC)
    injected = DriftDetection(
        detection_id=INJECTED_ID,
        signal="ctr",
        segment=INJECTED_SEGMENT,
        detector="ADWIN(delta=0.002,clock=1)",
        statistic=0.03,
        reference=0.05,
        window_start=datetime(2026, 11, 22, 10, 20, tzinfo=UTC),
        window_end=datetime(2026, 11, 22, 10, 30, tzinfo=UTC),
        event_time=detected_at,
    )
    publish(settings, settings.topic("drift"), [(injected.signal, injected.model_dump_json())])

    status = wait_for_status(
        dashboard.url,
        lambda s: (
            any(r["detection_id"] == INJECTED_ID for r in s["drift"]["log"])
            and bool(s["charts"]["exposure"]["now"])
        ),
    )
    assert status["status"]["model_version"] == "sasrec-v7"
    assert status["status"]["consumer_lag_records"] is not None
    # events/s counts the events topic once (not the worker's internal re-keyed topics): the
    # mean of the last 12 per-interval rates by type, the rounds being evenly spaced
    by_type = status["charts"]["event_rate"]["series"].values()
    expected = sum(sum(p[1] for p in points[-12:]) for points in by_type) / 12
    assert status["status"]["events_per_s"] == pytest.approx(expected)
    assert [t["up"] for t in status["targets"]] == [True, True, False]

    dom = Dom()
    dom.feed(dump_dom(chromium, dashboard.url, tmp_path / "profile"))

    def drawn(title: str, kind: str) -> dict[str, int]:
        return {e["data-series"]: int(e.get("data-points", 1)) for e in dom.charts[title][kind]}

    event_rate = drawn("Event rate by type (events/s)", "series")
    assert set(event_rate) == set(EVENT_TYPES)
    assert all(points >= 10 for points in event_rate.values())  # one per scrape interval
    assert set(drawn("CTR per arm", "series")) == set(ARMS)
    assert set(drawn("CTR per arm", "estimate")) == set(ARMS)
    assert [m["data-label"] for m in dom.charts["CTR per arm"]["alarm"]] == ["treatment"]
    assert set(drawn("Dismiss rate per arm", "series")) == set(ARMS)
    assert set(drawn("Recommend latency (s)", "series")) == {"p50", "p99"}

    def bars(title: str) -> set[tuple[str, str]]:
        return {
            (b["data-series"], b["data-category"])
            for b in dom.charts[title]["bar"]
            if float(b["data-value"]) > 0
        }

    score = bars("Top score distribution: now vs reference")
    assert {s for s, _ in score} == {"now", "reference"}
    assert {c for _, c in bars("Candidate-source mix")} == set(SOURCES)
    exposure = bars("Exposure by popularity decile")
    assert {s for s, _ in exposure} == {"now", "reference"}
    assert ("now", "D1") in exposure

    # The injected detection is in the drift log, its markup shown as text, never as markup.
    assert INJECTED_ID in dom.drift_rows
    row_text = dom.drift_row_text[dom.drift_rows.index(INJECTED_ID)]
    assert INJECTED_SEGMENT in row_text and "ctr" in row_text
    assert "b" not in dom.tags_in_drift_rows

    # The dashboard's own metrics counted the browser's request and the down process's scrapes.
    with urllib.request.urlopen(dashboard.url + "metrics", timeout=10) as response:
        own = parse_exposition(response.read().decode())
    assert own[("aether_dashboard_requests_total", (("path", "/"),))] >= 1
    assert own[("aether_dashboard_scrape_errors_total", (("target", "server-1"),))] >= 14
    assert own[("aether_dashboard_scrape_errors_total", (("target", "worker"),))] == 0
