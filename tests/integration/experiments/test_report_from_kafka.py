"""``aether experiments report`` against a real broker: slates served by the request pipeline are
published by serving's Kafka impression log, clicks and dismissals by a Kafka producer, and the
report reads both topics back and computes the read-out."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from confluent_kafka import Producer

from aether.cli import build_parser
from bandits import configs_from_settings
from core.settings import Settings
from evaluation.experiment_log import slate_records
from evaluation.experiment_output import flat_figures
from evaluation.experiment_readout import ReadoutConfig, read_out
from events import Interaction, encode
from features.ports import InMemoryFeatureStore
from features.rows import UserFeatureRow
from retrieval.catalog import ItemCatalog, ItemMeta
from retrieval.merge import CandidateRetriever, SourcePlan
from retrieval.sources import Candidate, RetrievalRequest
from serving.domain import RecommendationQuery
from serving.experiments import Experiments
from serving.impressions import InMemoryImpressionLog, KafkaImpressionLog
from serving.pipeline import PipelineConfig, RecommendationPipeline, RetrievalState

T0 = 1_750_000_000_000
ITEMS = [f"i{n}" for n in range(10)]
EXPERIMENTS = {
    "version": 1,
    "experiments": [
        {
            "name": "ranker",
            "salt": "it-ranker",
            "arms": [
                {"name": "popular", "weight": 1, "params": {"ranker": "popularity"}},
                {"name": "model", "weight": 1, "params": {"ranker": "sasrec"}},
                {"name": "mix", "weight": 0, "params": {"interleave": ["sasrec", "popularity"]}},
            ],
        }
    ],
}


class ListSource:
    def __init__(self, name: str, items: list[str]) -> None:
        self.name, self.items = name, items

    def candidates(self, request: RetrievalRequest) -> list[Candidate]:
        kept = [i for i in self.items if i not in request.exclusions]
        return [Candidate(i, 1.0 / (r + 1), self.name) for r, i in enumerate(kept[: request.k])]


class ReverseRanker:
    """The "model": reverses the retrieval order, so it never shows i0 in a 3-item slate."""

    model_version = "reverse-v1"

    def score(self, history, candidates):
        return np.arange(len(candidates), dtype=np.float32)

    def score_batch(self, histories, candidates):
        return [self.score(h, c) for h, c in zip(histories, candidates, strict=True)]


def serve(settings: Settings, users: list[str], forced_mix: list[str]):
    features = InMemoryFeatureStore()
    features.write_users([UserFeatureRow(u, 1, recent_items=("seen",)) for u in users])
    clock = iter(range(T0, T0 + 10_000_000, 1_000))
    kafka_log, memory_log = KafkaImpressionLog(settings), InMemoryImpressionLog()

    class BothLogs:  # the real Kafka log, and a copy to check the report against
        def publish(self, impression):
            kafka_log.publish(impression)
            memory_log.publish(impression)

        def flush(self, timeout_s=5.0):
            return kafka_log.flush(timeout_s)

    catalog = ItemCatalog(ItemMeta(i, title=i) for i in ITEMS)
    pipeline = RecommendationPipeline(
        features=features,
        retrieval=RetrievalState(
            retriever=CandidateRetriever(
                [SourcePlan(ListSource("ann", ITEMS))],
                catalog=catalog,
                fallback=ListSource("popular", ITEMS),
            ),
            catalog=catalog,
        ),
        ranker=ReverseRanker(),
        impressions=BothLogs(),
        config=PipelineConfig(candidates=10),
        experiments=Experiments.from_dict(EXPERIMENTS),
        clock_ms=lambda: next(clock),
    )
    slates = [(u, pipeline.recommend(RecommendationQuery(user_id=u, k=3))) for u in users]
    for u in forced_mix:
        query = RecommendationQuery(user_id=u, k=3, context={"experiment.ranker": "mix"})
        slates.append((u, pipeline.recommend(query)))
    assert BothLogs().flush(30) == 0
    return slates, memory_log.published


def feedback(slates, impressions, window_ms: int) -> list[Interaction]:
    """Half the users (by a stable hash) click i0 wherever shown; everyone dismisses i9; a click
    on i1 after the attribution window must not count."""
    served_at = {i.request_id: i.event_time_ms for i in impressions}
    events = []
    for user, slate in slates:
        served_ms = served_at[slate.request_id]
        for item in slate.items:
            kind, at = None, served_ms + 500
            if item.item_id == "i0" and zlib.crc32(user.encode()) % 2 == 0:
                kind = "click"
            elif item.item_id == "i9":
                kind = "dismiss"
            elif item.item_id == "i1":
                kind, at = "click", served_ms + window_ms + 1
            if kind:
                events.append(
                    Interaction(
                        event_id=f"{slate.request_id}:{item.item_id}:{kind}",
                        event_type=kind,
                        user_id=user,
                        item_id=item.item_id,
                        event_time=at,
                        request_id=slate.request_id,
                    )
                )
    return events


@pytest.mark.integration
def test_report_reads_both_topics_and_reads_out_the_arms(
    settings: Settings, make_topics, tmp_path: Path, monkeypatch
) -> None:
    make_topics(settings)
    users = [f"user-{n}" for n in range(300)]
    slates, impressions = serve(settings, users, forced_mix=users[:40])
    attribution, _ = configs_from_settings(settings)
    events = feedback(slates, impressions, attribution.window_ms)
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
    for event in events:
        producer.produce(settings.topic("events"), key=event.user_id.encode(), value=encode(event))
    assert producer.flush(30) == 0

    experiments_file = tmp_path / "experiments.yaml"
    experiments_file.write_text(yaml.safe_dump(EXPERIMENTS))
    out = tmp_path / "report.json"
    monkeypatch.setenv("AETHER_NAMESPACE", settings.namespace)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", settings.kafka.bootstrap_servers)
    monkeypatch.setenv("AETHER_DATA_DIR", str(settings.data_dir))
    args = build_parser().parse_args(
        ["experiments", "report", "--experiments-file", str(experiments_file), "--json", str(out)]
    )
    assert args.func(args) == 0
    report = json.loads(out.read_text())

    assert report["source"] == "kafka"
    assert report["slates"] == len(slates) == 340 and report["records_skipped"] == 0
    assert report["events_read"] == len(events)
    # every randomised user counted once, in the arm the hash put them in
    assert report["ranker.popular.users"] + report["ranker.model.users"] == 300
    assert report["ranker.mix.forced_impressions"] == 40 and report["ranker.mix.users"] == 0
    assert report["ranker.srm_flagged"] is False
    # the model never shows i0, so only the popular arm gets clicks; i1's clicks came too late
    assert report["ranker.model.clicks"] == 0
    clickers = sum(
        1 for u, s in slates[:300] if s.items[0].item_id == "i0" and zlib.crc32(u.encode()) % 2 == 0
    )
    assert report["ranker.popular.clicks"] == clickers > 0
    assert report["ranker.model.ctr_significant"] is True
    assert report["ranker.model.ctr_diff"] < 0
    # the model shows i9 (the last retrieved) in every slate, and every user dismisses it
    assert report["ranker.model.dismiss_rate"] == pytest.approx(1 / 3)
    assert report["ranker.model.guardrail_dismiss_rate_degraded"] is True
    # team draft: A = the model, B = retrieval order; i0 is B's first pick, clicked by half
    assert report["ranker.mix.interleaving_ranker_a"] == "reverse-v1"
    assert report["ranker.mix.interleaving_wins_a"] == 0
    assert report["ranker.mix.interleaving_wins_b"] > 0
    # nothing was lost on the way through Kafka: the same read-out from the served slates
    expected = flat_figures(
        read_out(
            slate_records(impressions, events, attribution),
            "ranker",
            {"popular": 1, "model": 1, "mix": 0},
            config=ReadoutConfig(),
        )
    )
    assert {k: v for k, v in report.items() if k.startswith("ranker.")} == expected
