"""``aether worker``'s Prometheus endpoint, scraped over HTTP from the real worker (a child process
on a real broker and Redis): events it applied and dead-lettered, events by type, freshness, lag,
impressions, rewards and posterior updates by arm, and the drift monitors' estimates show up, and
``promtool check metrics`` accepts the output (docs/metrics.md, section Worker)."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.lifecycle_processes import start_worker
from core.settings import Settings
from core.subprocesses import free_loopback_port

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000


def scrape(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            return reply.read().decode()
    except OSError:
        return None  # not listening yet


def scrape_until(
    worker: Any,
    port: int,
    ready: Callable[[str], bool],
    timeout_s: float = 180.0,
    *,
    require: bool = True,
) -> str | None:
    """Scrape every half second until ``ready`` holds; the last scrape. With ``require``, not
    ready within ``timeout_s`` fails the test (else the assertions on the last scrape say why)."""
    text = None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert worker.running, worker.log()
        text = scrape(port)
        if text is not None and ready(text):
            return text
        time.sleep(0.5)
    assert not require, f"not ready within {timeout_s:.0f} s: {worker.log()}"
    return text


def totals(text: str, sample: str, label: str, **where: str) -> dict[str, float]:
    """``sample`` (only those with the labels ``where``) summed by the value of ``label``."""
    summed: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == sample and where.items() <= found.labels.items():
                key = found.labels.get(label, "")
                summed[key] = summed.get(key, 0.0) + float(found.value)
    return summed


def test_the_worker_exports_its_metrics(
    settings: Settings, make_topics, tmp_path: Path, promtool: str
) -> None:
    make_topics(settings)
    metrics_port = free_loopback_port()
    worker = start_worker(settings, tmp_path / "worker.log", metrics_port=metrics_port)
    events = [
        {
            "event_id": f"m-{n}",
            "event_type": "click" if n % 3 else "view",
            "user_id": f"u{n % 4}",
            "item_id": f"i{n % 7}",
            "event_time": T0 + 1000 * n,
        }
        for n in range(20)
    ]
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
    for event in events:
        producer.produce(
            settings.topic("events"), key=str(event["user_id"]), value=orjson.dumps(event)
        )
    producer.produce(settings.topic("events"), key=b"u0", value=b"{not json")
    # A slate for u0 (two items, arm A), a click on one of them, then a later event of u0 that
    # moves its partition's event time past the attribution window: both slots are decided.
    slate = {
        "request_id": "req-1",
        "user_id": "u0",
        "items": [
            {"item_id": "i1", "position": 0, "score": 0.9, "source": "ann", "propensity": 1.0},
            {"item_id": "i2", "position": 1, "score": 0.5, "source": "fresh", "propensity": 1.0},
        ],
        "model_version": "m@1",
        "experiment_arm": "arm=A",
        "event_time": T0 + 30_000,
    }
    producer.produce(settings.topic("impressions"), key=b"u0", value=orjson.dumps(slate))
    assert producer.flush(30) == 0
    # The later event must not overtake the slate: the worker reads the two topics in no
    # particular order, and attribution keeps one watermark per partition over both (an
    # impression read after a later event would be late). So the slate is consumed first.
    impressions = settings.topic("impressions")
    try:
        scrape_until(
            worker,
            metrics_port,
            lambda text: (
                totals(text, "aether_stream_events_total", "outcome", topic=impressions).get(
                    "applied", 0
                )
                >= 1
            ),
        )
    except BaseException:
        worker.stop(30)
        raise
    later = [
        {
            "event_id": "m-click",
            "event_type": "click",
            "user_id": "u0",
            "item_id": "i1",
            "request_id": "req-1",
            "event_time": T0 + 31_000,
        },
        {
            "event_id": "m-later",
            "event_type": "view",
            "user_id": "u0",
            "item_id": "i3",
            "event_time": T0 + 3 * 3_600_000,
        },
    ]
    for event in later:
        producer.produce(settings.topic("events"), key=b"u0", value=orjson.dumps(event))
    assert producer.flush(30) == 0
    topic = settings.topic("events")

    def all_counted(text: str) -> bool:
        outcomes = totals(text, "aether_stream_events_total", "outcome", topic=topic)
        updates = totals(text, "aether_bandit_posterior_updates_total", "")
        return bool(
            outcomes.get("applied", 0) >= len(events) + len(later)
            and outcomes.get("dead_letter")
            and updates.get("", 0) >= 2
            and topic in totals(text, "aether_stream_consumer_lag_records", "topic")
        )

    try:
        text = scrape_until(worker, metrics_port, all_counted, require=False)
    finally:
        worker.stop(30)
    assert text is not None, worker.log()
    (tmp_path / "worker.prom").write_text(text)

    outcomes = totals(text, "aether_stream_events_total", "outcome", topic=topic)
    applied = len(events) + len(later)
    assert outcomes.get("applied") == applied, (outcomes, worker.log())
    assert outcomes.get("dead_letter") == 1
    assert sum(totals(text, "aether_stream_dead_letters_total", "reason").values()) == 1
    assert sum(totals(text, "aether_stream_feature_rows_total", "entity").values()) > 0
    assert totals(text, "aether_stream_events_by_type_total", "event_type") == {
        "click": sum(e["event_type"] == "click" for e in events) + 1,
        "view": sum(e["event_type"] == "view" for e in events) + 1,
    }
    # Every record of the events topic, the dead letter too (its batch committed with it).
    assert totals(text, "aether_stream_freshness_seconds_count", "") == {"": applied + 1}
    assert topic in totals(text, "aether_stream_consumer_lag_records", "topic")
    assert topic in totals(text, "aether_stream_consumer_lag_seconds", "topic")
    # Attribution: two slots of arm A decided, one clicked; both reach the posteriors.
    assert totals(text, "aether_bandit_impressions_total", "arm") == {"arm=A": 2}
    assert totals(text, "aether_bandit_rewards_total", "arm") == {"arm=A": 1}
    assert totals(text, "aether_bandit_dismissals_total", "arm") == {"arm=A": 0}
    assert totals(text, "aether_bandit_posterior_updates_total", "") == {"": 2}
    # CPU by stage: every stage this traffic runs counted some, and only the known stages.
    stages = totals(text, "aether_stream_stage_cpu_seconds_total", "stage")
    from streams.worker_metrics import STAGES

    assert set(stages) <= set(STAGES), stages
    ran = {"user_step", "item_step", "attribution", "posteriors", "drift", "feature_rows"}
    ran |= {"state_commit", "produce", "offline_sinks"}
    assert {stage for stage, seconds in stages.items() if seconds > 0} == ran, stages
    # Each partition's first attribution batch rebuilds its state from the store.
    states = totals(text, "aether_attribution_states_total", "source")
    assert set(states) == {"kept", "rebuilt"} and states["rebuilt"] >= 1, states
    # The events' drift monitor has estimates (the slate's window stays open: nothing later on
    # its impressions partition moves that monitor's event time past it).
    signals = totals(text, "aether_drift_statistic", "signal", segment="event_type=click")
    assert {"event_share", "event_rate"} <= set(signals), text
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"promtool check metrics:\n{result.stdout}{result.stderr}"
