"""The drift log against a real broker: a page started before the worker created ``<ns>.drift``
says it waits, then shows detections once the topic exists; bad records are skipped, replays
de-duplicated."""

from __future__ import annotations

import dataclasses
import json
import time
import urllib.request
from datetime import UTC, datetime

import pytest
from dashboard_processes import create_topics, publish

from core.settings import Settings
from dashboard.config import config_from_settings
from dashboard.server import DashboardServer
from events.models import DriftDetection

pytestmark = pytest.mark.integration


def status(url: str) -> dict:
    with urllib.request.urlopen(url + "api/status", timeout=10) as response:
        return json.load(response)


def wait_until(url: str, ready, timeout_s: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout_s
    last: dict = {}
    while time.monotonic() < deadline:
        last = status(url)
        if ready(last):
            return last
        time.sleep(0.3)
    pytest.fail(f"never got there: {json.dumps(last['drift'])}")


def test_the_drift_log_follows_a_topic_created_after_the_page_started(
    kafka_bootstrap: str, namespace: str
) -> None:
    settings = Settings(namespace=namespace, KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap)
    config = config_from_settings(settings, port=0, targets=())
    assert config.topics is not None
    config = dataclasses.replace(config, topics=dataclasses.replace(config.topics, refresh_s=0.5))
    with DashboardServer(config) as dashboard:
        waiting = wait_until(dashboard.url, lambda s: s["drift"]["error"] is not None)
        assert settings.topic("drift") in waiting["drift"]["error"]
        assert waiting["drift"]["log"] == []

        create_topics(settings, [settings.topic("drift"), settings.topic("impressions")])
        at = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
        detection = DriftDetection(
            detection_id="d-late-topic",
            signal="exposure_gini",
            segment="all",
            detector="PageHinkley(threshold=0.05)",
            statistic=0.7,
            reference=0.6,
            window_start=at,
            window_end=at,
            event_time=at,
        )
        publish(
            settings,
            settings.topic("drift"),
            [
                ("exposure_gini", detection.model_dump_json()),
                ("exposure_gini", '{"signal": "not a detection"}'),
                ("exposure_gini", detection.model_dump_json()),  # a replay of the worker
            ],
        )
        shown = wait_until(
            dashboard.url, lambda s: s["drift"]["log"] and s["drift"]["skipped_records"] == 1
        )

    assert [row["detection_id"] for row in shown["drift"]["log"]] == ["d-late-topic"]
    assert shown["drift"]["log"][0]["statistic"] == 0.7
    assert shown["drift"]["error"] is None
