"""The page and its data: the drift log (decoded, de-duplicated, escaped), exposure, targets, and a
view built from processes that export nothing yet."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pytest

from core.settings import MetricsSettings
from dashboard.drift_log import DriftLog
from dashboard.exposure_view import ExposureTracker
from dashboard.page import render_page
from dashboard.scrape import ScrapeTarget, parse_exposition
from dashboard.series import Round, ScrapeRing
from dashboard.server import json_safe
from dashboard.targets import default_targets
from dashboard.view import TargetState, build_view
from events.models import DriftDetection


def detection(detection_id: str, segment: str = "arm=b", minute: int = 0) -> DriftDetection:
    at = datetime(2026, 11, 22, 10, minute, tzinfo=UTC)
    return DriftDetection(
        detection_id=detection_id,
        signal="ctr",
        segment=segment,
        detector="ADWIN(delta=0.002,clock=1)",
        statistic=0.035,
        reference=0.05,
        window_start=at,
        window_end=at,
        event_time=at,
    )


def view_of(
    ring: ScrapeRing, log: DriftLog | None = None, exposure: ExposureTracker | None = None
) -> dict:
    log = log or DriftLog()
    return build_view(
        ring,
        targets=[TargetState("worker", "http://127.0.0.1:9464/metrics", None, None, None)],
        drift=log.newest_first(),
        drift_skipped=log.skipped,
        exposure=(exposure or ExposureTracker()).snapshot(),
        window_rounds=12,
        interval_s=5.0,
        computed_at=1_800_000_000.0,
        drift_topic="t.drift",
    )


def as_xml(html: str) -> ET.Element:
    """The page is also well-formed XML once the doctype and void meta tags are dropped."""
    body = html.split("<body>", 1)[1].rsplit("</body>", 1)[0]
    return ET.fromstring(f"<body>{body}</body>")


def test_drift_log_escapes_html_from_the_topic() -> None:
    log = DriftLog()
    hostile = 'arm=<img src=x onerror="alert(1)">&<script>'
    log.add(detection("d-1", segment=hostile), received_at=1.0)

    html = render_page(view_of(ScrapeRing(), log))

    assert hostile not in html and "<img" not in html and "<script" not in html
    assert "arm=&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&amp;&lt;script&gt;" in html
    rows = [tr for tr in as_xml(html).iter("tr") if tr.get("class") == "detection"]
    assert len(rows) == 1
    assert hostile in "".join(rows[0].itertext())


def test_drift_log_deduplicates_orders_by_event_time_and_skips_bad_records() -> None:
    log = DriftLog(capacity=2)
    log.add_record(detection("d-1", minute=5).model_dump_json(), received_at=1.0)
    log.add_record(detection("d-1", minute=5).model_dump_json(), received_at=2.0)  # a replay
    log.add_record(detection("d-2", minute=1).model_dump_json(), received_at=3.0)
    assert log.add_record(b'{"signal": "ctr"}', received_at=4.0) is None
    assert log.add_record(b"\xff not json", received_at=5.0) is None

    assert [e.detection.detection_id for e in log.newest_first()] == ["d-1", "d-2"]
    assert log.newest_first()[0].received_at == 1.0
    assert log.skipped == 2
    log.add(detection("d-3", minute=9), received_at=6.0)  # beyond capacity: the oldest read goes
    assert [e.detection.detection_id for e in log.newest_first()] == ["d-3", "d-2"]


def test_a_page_with_no_data_at_all_renders_and_says_so() -> None:
    view = view_of(ScrapeRing())
    html = render_page(view)

    root = as_xml(html)
    assert "no drift detected yet" in "".join(root.itertext())
    assert html.count("no data yet") >= 7  # every chart, and the status figures
    assert view["status"]["events_per_s"] is None
    json.dumps(json_safe(view), allow_nan=False)  # the JSON endpoint's encoding


def test_processes_without_the_contract_series_yet_do_not_break_the_view() -> None:
    ring = ScrapeRing()
    text = "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 1.5\n"
    ring.add(Round.of(0.0, {"worker": parse_exposition(text), "server-0": None}))
    ring.add(Round.of(5.0, {"worker": parse_exposition(text), "server-0": None}))

    view = view_of(ring)

    assert view["charts"]["event_rate"]["series"] == {}
    assert view["charts"]["latency"]["series"] == {}
    assert view["charts"]["score"]["now"] == []
    assert view["status"]["model_version"] is None
    render_page(view)


WORKER = """\
# TYPE aether_bandit_impressions_total counter
aether_bandit_impressions_total{{arm="a"}} {shown}
# TYPE aether_bandit_rewards_total counter
aether_bandit_rewards_total{{arm="a"}} {clicks}
# TYPE aether_drift_detections_total counter
aether_drift_detections_total{{signal="ctr",segment="arm=a",detector="ADWIN"}} {detections}
# TYPE aether_drift_statistic gauge
aether_drift_statistic{{signal="ctr",segment="arm=a"}} {estimate}
# TYPE aether_stream_consumer_lag_records gauge
aether_stream_consumer_lag_records{{topic="events"}} 7
aether_stream_consumer_lag_records{{topic="impressions"}} 3
# TYPE aether_model_info gauge
aether_model_info{{model_version="v2"}} 1
aether_model_info{{model_version="v1"}} 0
"""


def test_ctr_chart_has_observed_estimate_and_the_alarm_at_the_detection() -> None:
    ring = ScrapeRing()
    for at, shown, clicks, detections, estimate in (
        (0.0, 0, 0, 0, 0.05),
        (5.0, 1000, 50, 0, 0.05),
        (10.0, 2000, 80, 1, 0.035),
    ):
        text = WORKER.format(shown=shown, clicks=clicks, detections=detections, estimate=estimate)
        ring.add(Round.of(at, {"worker": parse_exposition(text)}))

    view = view_of(ring)
    ctr = view["charts"]["ctr"]

    assert ctr["series"]["a"][-1] == [10.0, pytest.approx(0.04)]  # 80 / 2000 over the window
    assert ctr["estimate"]["a"][-1] == [10.0, 0.035]
    assert ctr["alarms"] == [[10.0, "a"]]
    assert view["status"]["consumer_lag_records"] == 10
    assert view["status"]["model_version"] == "v2"
    html = render_page(view)
    assert 'class="alarm" data-label="a"' in html


def test_exposure_learns_the_reference_then_compares_the_window() -> None:
    tracker = ExposureTracker(reference_slots=100, window_slots=50, buckets=2)
    tracker.add_slate(["head"] * 50 + [f"tail-{i}" for i in range(49)])
    assert not tracker.snapshot().ready and tracker.snapshot().reference_slots == 99

    tracker.add_slate(["head"])  # the 100th slot fixes the reference: head alone is half
    tracker.add_slate(["head"] * 40 + ["tail-1"] * 10)
    snapshot = tracker.snapshot()

    assert snapshot.ready
    assert snapshot.reference_shares == pytest.approx((51 / 100, 49 / 100))
    assert snapshot.now_shares == pytest.approx((0.8, 0.2))
    assert snapshot.coverage == pytest.approx(2 / 50)
    assert snapshot.js is not None and snapshot.js > 0


@pytest.mark.parametrize(
    ("metrics", "processes", "expected"),
    [
        (MetricsSettings(), 1, [("worker", "http://127.0.0.1:9464/metrics"), ("server-0", "http://127.0.0.1:9465/metrics")]),
        (MetricsSettings(host="0.0.0.0"), 2, [("worker", "http://127.0.0.1:9464/metrics"), ("server-0", "http://127.0.0.1:9465/metrics"), ("server-1", "http://127.0.0.1:9466/metrics")]),
        (MetricsSettings(host="::"), 1, [("worker", "http://[::1]:9464/metrics"), ("server-0", "http://[::1]:9465/metrics")]),
        (MetricsSettings(port=0), 1, []),
        (MetricsSettings(port=9100), 1, [("worker", "http://127.0.0.1:9100/metrics")]),
    ],
)  # fmt: skip
def test_targets_follow_the_processes_own_address_rule(
    metrics: MetricsSettings, processes: int, expected: list[tuple[str, str]]
) -> None:
    assert default_targets(metrics, processes) == tuple(ScrapeTarget(n, u) for n, u in expected)
