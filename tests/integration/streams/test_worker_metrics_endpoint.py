"""``aether worker``'s Prometheus endpoint, scraped over HTTP from the real worker (a child process
on a real broker and Redis): events it applied and dead-lettered show up, and ``promtool check
metrics`` accepts the output (docs/metrics.md, section Worker)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from core.settings import Settings
from core.subprocesses import free_loopback_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
T0 = 1_700_000_000_000


def scrape(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            return reply.read().decode()
    except OSError:
        return None  # not listening yet


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
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "REDIS_URL": settings.redis.url.get_secret_value(),
        "AETHER_NAMESPACE": settings.namespace,
        "AETHER_DATA_DIR": str(settings.data_dir),
    }
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "aether.cli.worker", "--metrics-port", str(metrics_port)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
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
    assert producer.flush(30) == 0
    text = None
    topic = settings.topic("events")
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert worker.poll() is None, log_path.read_text(errors="replace")
            text = scrape(metrics_port)
            if text is not None:
                outcomes = totals(text, "aether_stream_events_total", "outcome", topic=topic)
                if outcomes.get("applied", 0) >= len(events) and outcomes.get("dead_letter"):
                    break
            time.sleep(0.5)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(10)
    assert text is not None, log_path.read_text(errors="replace")
    (tmp_path / "worker.prom").write_text(text)

    outcomes = totals(text, "aether_stream_events_total", "outcome", topic=topic)
    assert outcomes.get("applied") == len(events), (outcomes, log_path.read_text(errors="replace"))
    assert outcomes.get("dead_letter") == 1
    assert sum(totals(text, "aether_stream_dead_letters_total", "reason").values()) == 1
    assert sum(totals(text, "aether_stream_feature_rows_total", "entity").values()) > 0
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"promtool check metrics:\n{result.stdout}{result.stderr}"
