"""The operator page with the real worker (``aether worker`` as a child process on the real broker
and Redis), in a real headless Chromium: the test publishes interactions and served slates whose
ranker top score shifts half-way; the worker's drift monitors detect the shift and publish it on
``<ns>.drift``; the page shows the worker's event rates and the detection in its drift log."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from browser import Dom, dump_dom, wait_for_status

from benchmarks.lifecycle_processes import start_worker
from core.settings import Settings
from core.subprocesses import free_loopback_port
from dashboard.config import config_from_settings
from dashboard.scrape import ScrapeTarget
from dashboard.server import DashboardServer
from streams.publish import producer_for

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000
SLATES, SHIFT_AT = 2_400, 1_200


@pytest.fixture
def worker_metrics(settings: Settings, make_topics, tmp_path: Path) -> Iterator[str]:
    """A real worker for the test's namespace; yields its /metrics URL."""
    make_topics(settings)
    port = free_loopback_port()
    worker = start_worker(settings, tmp_path / "worker.log", metrics_port=port)
    try:
        yield f"http://127.0.0.1:{port}/metrics"
    finally:
        worker.kill()


def publish_traffic(settings: Settings) -> None:
    """Slates (one every 100 ms of event time, top score +0.3 from ``SHIFT_AT``) and clicks."""
    rng = random.Random(3)
    # The project's producer: records start on their user's partition (a foreign partitioner's
    # records are re-routed, and arrive later than the 60 s lateness of this compressed stream).
    producer = producer_for(settings, **{"linger.ms": 5})
    for k in range(SLATES):
        user = f"u{k % 40}"
        score = rng.gauss(0.5 + (0.3 if k >= SHIFT_AT else 0.0), 0.05)
        slate = {
            "request_id": f"r{k}",
            "user_id": user,
            "items": [
                {"item_id": f"i{k % 97}", "position": 0, "score": score, "source": "ann",
                 "propensity": 1.0},
            ],
            "model_version": "m@1",
            "event_time": T0 + 100 * k,
        }  # fmt: skip
        producer.produce(settings.topic("impressions"), key=user, value=orjson.dumps(slate))
        if k % 4 == 0:
            event = {
                "event_id": f"e{k}",
                "event_type": "click" if k % 8 else "view",
                "user_id": user,
                "item_id": f"i{k % 97}",
                "request_id": f"r{k}",
                "event_time": T0 + 100 * k + 50,
            }
            producer.produce(settings.topic("events"), key=user, value=orjson.dumps(event))
    assert producer.flush(30) == 0


def test_the_page_shows_what_the_real_worker_detected(
    chromium: str, settings: Settings, worker_metrics: str, tmp_path: Path
) -> None:
    config = config_from_settings(
        settings, port=0, targets=(ScrapeTarget("worker", worker_metrics),), interval_s=1.0
    )
    with DashboardServer(config) as dashboard:
        publish_traffic(settings)
        status = wait_for_status(
            dashboard.url,
            lambda s: (
                any(r["signal"] == "top_score" for r in s["drift"]["log"])
                and any(len(points) >= 2 for points in s["charts"]["event_rate"]["series"].values())
            ),
            timeout_s=180,
        )
        assert [t["up"] for t in status["targets"]] == [True]
        dom = Dom()
        dom.feed(dump_dom(chromium, dashboard.url, tmp_path / "profile"))

    shifts = [r for r in status["drift"]["log"] if r["signal"] == "top_score"]
    assert all(r["statistic"] > r["reference"] for r in shifts)
    rows = [dom.drift_row_text[dom.drift_rows.index(r["detection_id"])] for r in shifts]
    assert all("top_score" in row for row in rows)
    drawn = {e["data-series"] for e in dom.charts["Event rate by type (events/s)"]["series"]}
    assert drawn == {"click", "view"}
