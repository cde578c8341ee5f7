"""``aether ope --from-log`` against a real broker: a log written by a known stochastic policy is
published to the namespace's topics, and the candidate's estimated CTR holds its true value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from confluent_kafka import Producer

from aether.cli import build_parser
from bandits import configs_from_settings
from bandits.logged_simulation import LoggedWorld
from core.settings import Settings
from evaluation.log_ope import from_log_estimates
from events import encode


@pytest.mark.integration
def test_ope_from_the_kafka_log_recovers_a_known_policy_value(
    settings: Settings, make_topics, tmp_path: Path, monkeypatch
) -> None:
    make_topics(settings)
    world = LoggedWorld.example()
    impressions, events = world.simulate(3_000, seed=3)
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers, "linger.ms": 5})
    for impression in impressions:
        producer.produce(
            settings.topic("impressions"), key=impression.user_id.encode(), value=encode(impression)
        )
    for event in events:
        producer.produce(settings.topic("events"), key=event.user_id.encode(), value=encode(event))
    assert producer.flush(30) == 0

    out = tmp_path / "ope.json"
    monkeypatch.setenv("AETHER_NAMESPACE", settings.namespace)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", settings.kafka.bootstrap_servers)
    monkeypatch.setenv("AETHER_DATA_DIR", str(settings.data_dir))
    args = build_parser().parse_args(
        ["ope", "--from-log", "--policy", "uniform", "--bootstrap", "300", "--json", str(out)]
    )
    assert args.func(args) == 0
    figures = json.loads(out.read_text())

    truth = world.true_value([{item: 0.25 for item in dist} for dist in world.logging])
    assert figures["from_log_rounds"] == 9_000 and figures["source"] == "kafka"
    for name in ("ipw", "snipw", "dr"):
        low, high = figures[f"from_log_{name}_ci_low"], figures[f"from_log_{name}_ci_high"]
        assert low <= truth <= high, (name, low, truth, high)
    attribution, _ = configs_from_settings(settings)
    direct = from_log_estimates(impressions, events, "uniform", attribution, n_bootstrap=300)
    assert figures["from_log_dr"] == pytest.approx(direct["dr"])  # nothing lost through Kafka
