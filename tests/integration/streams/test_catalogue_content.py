"""The catalogue agent writes the content collection: catalogue updates published on
``<ns>.items`` reach Milvus (Lite) as rows with their text embedded by the real
all-MiniLM-L6-v2, through the real worker (a child process on the real broker and Redis). An
older update of an item arriving later does not overwrite the newer one. Serving's side of new
items (the refresh, the content map, the gRPC answer) is ``tests/integration/serving/
test_new_items.py``."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import orjson
import pytest

from benchmarks.lifecycle_processes import start_worker
from core.settings import Settings
from retrieval.content_index import ContentIndex, ContentRow
from retrieval.milvus_lite import hold_milvus_lite
from streams.publish import producer_for

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000


def update(item: str, title: str, t: int, **extra: object) -> bytes:
    body = {"event_id": f"{item}@{t}", "item_id": item, "title": title, "event_time": t}
    return orjson.dumps(body | extra)


def test_catalogue_updates_are_embedded_into_the_content_collection(
    settings: Settings, make_topics, tmp_path: Path
) -> None:
    make_topics(settings)
    # This process holds the Milvus Lite file and shares its socket, as the embedded stack does.
    with hold_milvus_lite(settings.milvus.uri):
        rows = run_worker_and_read(settings, tmp_path)
    assert set(rows) == {"n1", "n2", "n3"}
    assert rows["n1"].title == "Nebula Wars: The Return" and rows["n1"].event_time_ms == T0 + 2_000
    assert rows["n2"].available is False and rows["n3"].available is True
    assert rows["n3"].categories == ("Sci-Fi", "Adventure")
    vectors = np.stack([rows[i].vector for i in ("n1", "n2", "n3")])
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    # Real text embeddings: the two space films are closer to each other than to the romance.
    similarity = vectors @ vectors.T
    assert similarity[0, 2] > similarity[0, 1]


def run_worker_and_read(settings: Settings, tmp_path: Path) -> dict[str, ContentRow]:
    worker = start_worker(settings, tmp_path / "worker.log", embed_catalogue=True)
    producer = producer_for(settings)
    topic = settings.topic("items")
    messages = [
        update("n1", "Nebula Wars: The Return", T0 + 2_000, categories=["Sci-Fi"]),
        update("n2", "Summer Kisses", T0, categories=["Romance"], available=False),
        update("n3", "Comet Hunters", T0, categories=["Sci-Fi", "Adventure"]),
        update("n1", "an older title", T0 + 1_000),  # older than the first, delivered after it
    ]
    for value in messages:
        producer.produce(topic, key=orjson.loads(value)["item_id"], value=value)
    assert producer.flush(30) == 0
    try:
        rows: dict[str, ContentRow] = {}
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and len(rows) < 3:
            assert worker.running, worker.log()
            time.sleep(1)
            with ContentIndex.from_settings(settings.milvus, settings.deployment) as content:
                rows = {r.item_id: r for r in content.read(["n1", "n2", "n3"], vectors=True)}
    finally:
        worker.kill()
    assert len(rows) == 3, worker.log()
    return rows
