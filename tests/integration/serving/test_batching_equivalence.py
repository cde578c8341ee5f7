"""Micro-batched requests are answered as single ones: real Redis/Feast, Milvus Lite, a SASRec
release (its own item embeddings indexed, its encoder driving the ANN source).

Concurrent requests go through ``aether serve``'s pipeline with batching on; they must share user
vector passes and Milvus searches (the batch-size histogram says so), and each slate must be the
slate the same request gets alone with batching off: the same items, sources and model version,
scores equal up to float rounding (a batched SASRec pass pads the histories).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from live_stores import catalogue, quiet_settings, register_pair, write_rows
from prometheus_client import REGISTRY

from core.settings import Settings
from features.store import FeastOnlineStore
from lifecycle.registry import Registry
from retrieval.index import ItemIndex
from serving.build_pipeline import build_serving_app
from serving.domain import RecommendationQuery, Slate
from serving.impressions import InMemoryImpressionLog
from serving.pipeline import PipelineConfig, RecommendationPipeline

pytestmark = pytest.mark.integration

ITEMS = [f"i{n}" for n in range(80)]
USERS = {f"u{n}": tuple(ITEMS[(7 * n + 3 * j) % 80] for j in range(2 + n % 9)) for n in range(16)}
USERS["cold"] = ()


def batch_sizes(stage: str) -> tuple[float, float]:
    """(batches, requests in them) at ``stage`` so far."""
    labels = {"stage": stage}
    count = REGISTRY.get_sample_value("aether_serving_batch_size_count", labels) or 0.0
    total = REGISTRY.get_sample_value("aether_serving_batch_size_sum", labels) or 0.0
    return count, total


def test_concurrent_batched_requests_get_the_slates_they_get_alone(
    settings: Settings, make_topics, tmp_path: Path
) -> None:
    # A long window: on a loaded machine the threads still meet (a batch also never waits
    # when nobody else is on the way, so the single requests below do not wait it out).
    settings = quiet_settings(settings, batch_window_ms=20.0)
    make_topics(settings)
    write_rows(settings, ITEMS, {u: h for u, h in USERS.items() if h})
    registry = Registry.for_deployment(settings.deployment)
    pair = register_pair(
        settings, registry, tmp_path / "r.pt", ITEMS, 3, catalogue(ITEMS), promote=True
    )
    index = ItemIndex.from_settings(settings.milvus, settings.deployment)
    app = build_serving_app(settings, index=index)
    assert app.live.release.ranker_encodes  # the ranker's vector drives the ANN source
    queries = [RecommendationQuery(user_id=u, k=8) for u in USERS for _ in range(2)]
    before = {stage: batch_sizes(stage) for stage in ("features", "user_vector", "ann")}
    batched: dict[int, Slate] = {}
    try:
        app.pipeline.recommend(queries[0])  # warm: Milvus' first search opens its channel
        start = threading.Barrier(len(queries))

        def ask(n: int) -> None:
            start.wait()
            batched[n] = app.pipeline.recommend(queries[n])

        threads = [threading.Thread(target=ask, args=(n,)) for n in range(len(queries))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        index.batch_searches(None)  # the reference: every request alone, nothing batched
        alone_pipeline = RecommendationPipeline(
            features=FeastOnlineStore(settings.redis, settings.deployment),
            state=app.pipeline.state,
            impressions=InMemoryImpressionLog(),
            config=PipelineConfig(
                candidates=settings.serving.candidates,
                deadline_s=settings.serving.deadline_ms / 1000,
            ),
        )
        alone = [alone_pipeline.recommend(q) for q in queries]
    finally:
        app.close()

    for stage in ("features", "user_vector", "ann"):
        batches, requests = (a - b for a, b in zip(batch_sizes(stage), before[stage], strict=True))
        assert requests > batches > 0, f"{stage}: no batch of two or more"
    for n, query in enumerate(queries):
        got, expected = batched[n], alone[n]
        assert got.model_version == expected.model_version == pair.label
        assert got.fallback_reasons == expected.fallback_reasons == ()
        assert [(i.item_id, i.source) for i in got.items] == [
            (i.item_id, i.source) for i in expected.items
        ], query.user_id
        for a, b in zip(got.items, expected.items, strict=True):
            assert a.score == pytest.approx(b.score, rel=1e-4, abs=1e-5)
