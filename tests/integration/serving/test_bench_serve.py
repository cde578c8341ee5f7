"""Smoke test of ``aether bench serve``'s machinery on a tiny catalogue: stores prepared on real
Redis/Feast and Milvus Lite, the server child process over real gRPC, one short open-loop rate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aether.settings import Settings
from serving.bench import (
    ServerProcess,
    offered_load,
    prepare_stores,
    rate_figures,
    request_users,
)

pytestmark = pytest.mark.integration


def tiny_movielens(users: int = 30, items: int = 60, seed: int = 0) -> tuple[pd.DataFrame, ...]:
    """Ratings and items shaped like ``interactions.movielens`` returns them."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(users):
        for n, item in enumerate(rng.choice(items, size=12, replace=False)):
            rows.append((str(user), str(item), 4.0, 1_000_000 + user * 100 + n))
    ratings = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp_ms"])
    ratings = ratings.sort_values("timestamp_ms", kind="stable").reset_index(drop=True)
    catalogue = pd.DataFrame(
        {
            "item_id": [str(i) for i in range(items)],
            "title": [f"Movie {i}" for i in range(items)],
            "categories": [("Drama",) if i % 2 else ("Comedy",) for i in range(items)],
        }
    )
    return ratings, catalogue


def test_open_loop_load_against_the_server_process(
    settings: Settings, make_topics, tmp_path: Path
) -> None:
    make_topics(settings)  # impressions are published to the namespace's topic
    ratings, catalogue = tiny_movielens()
    prepared = prepare_stores(settings, ratings, catalogue)
    assert len(prepared.item_ids) == 60 and len(prepared.user_ids) == 30

    server = ServerProcess.start(settings, None, tmp_path / "server.log")
    try:
        users = request_users(prepared.user_ids, 20, unknown_share=0.25, seed=1)
        before = server.metrics()
        load = offered_load(server.address, users, rate=40, k=5)
        after = server.metrics()
    finally:
        server.stop()

    assert any(u.startswith("bench-new-") for u in users) and set(users) & set(prepared.user_ids)
    assert dict(load.codes) == {"OK": 20}, server.log_tail()
    assert len(load.latencies_ms) == 20 and load.short_slates == 0
    assert dict(load.model_versions) == {"retrieval-only": 20}  # no ranker given
    figures = rate_figures(40, load, before, after, server_cpu_s=(0.0, 0.0))
    assert figures["errors_at_40rps"] == 0
    assert (
        after["aether_recommend_requests_total"] - before["aether_recommend_requests_total"] == 20
    )
    # The stage timers saw every request; stages nest inside the pipeline's time.
    assert figures["wall_ms_features_at_40rps"] > 0
    assert figures["wall_ms_retrieval_at_40rps"] >= figures["wall_ms_source_ann_at_40rps"]
    assert figures["wall_ms_pipeline_at_40rps"] >= figures["wall_ms_retrieval_at_40rps"]
    assert "cpu_ms_ranking_at_40rps" not in figures  # no ranker: that stage never ran
