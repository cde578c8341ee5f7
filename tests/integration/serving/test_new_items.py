"""New items reach a running server through the content collection, and unavailable items never
do (unless a request opts in): real MiniLM text embeddings, Milvus Lite, Redis/Feast, gRPC.

The stream's catalogue agent writes the content collection with ``content_rows`` +
``ContentIndex.upsert``; here the test writes it the same way, so this checks serving's side:
the refresh picks the rows up, the release's content map (fitted on the indexed items' text)
places them in the item space, the content source retrieves them with "new, similar to X"."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from live_stores import T0, quiet_settings, write_rows

from core.settings import Settings
from lifecycle.publish import publish_index
from lifecycle.registry import Registry
from retrieval.catalog import ItemCatalog, ItemMeta
from retrieval.content import MiniLMTextEncoder, fit_content_map
from retrieval.content_index import ContentIndex, content_rows
from retrieval.item_vectors import ItemVectors
from serving.build_pipeline import build_serving_app
from serving.client import RecommenderClient
from serving.server import start_server

pytestmark = pytest.mark.integration

SPACE = [
    "Star Voyage",
    "Galaxy Raiders",
    "The Last Astronaut",
    "Mars Colony",
    "Nebula Wars",
    "Rocket to the Moon",
    "Alien Frontier",
    "Orbit of Doom",
    "Interstellar Drift",
    "Comet Hunters",
]
ROMANCE = [
    "Love in Paris",
    "The Wedding Planner's Heart",
    "Summer Kisses",
    "A Valentine Story",
    "Falling for You",
    "Letters to My Love",
    "Romance in Rome",
    "The Bride's Secret",
    "Sweetheart Lane",
    "Moonlit Proposal",
]


def indexed_catalogue() -> tuple[ItemCatalog, list[str], np.ndarray]:
    """20 items in two clusters: space films near one axis, romances near the other."""
    rng = np.random.default_rng(0)
    metas, rows = [], []
    for n, title in enumerate(SPACE):
        metas.append(ItemMeta(f"s{n}", title, ("Sci-Fi", "Adventure"), True, T0 - 10**10))
        rows.append([1.0, 0.0, 0.0, 0.0, *rng.normal(0, 0.05, 4)])
    for n, title in enumerate(ROMANCE):
        metas.append(ItemMeta(f"r{n}", title, ("Romance", "Drama"), True, T0 - 10**10))
        rows.append([0.0, 1.0, 0.0, 0.0, *rng.normal(0, 0.05, 4)])
    return ItemCatalog(metas), [m.item_id for m in metas], np.asarray(rows, dtype=np.float32)


def test_a_new_item_in_the_content_collection_is_served_as_new_similar_to_what_you_watched(
    settings: Settings, make_topics, tmp_path: Path
) -> None:
    settings = quiet_settings(settings)
    make_topics(settings)
    catalog, ids, matrix = indexed_catalogue()
    fan = ("s0", "s1", "r0")  # two space films, one romance
    write_rows(
        settings,
        ids,
        {"fan": fan},
        popularity={i: 5.0 for i in ids},
        unavailable=["s3"],  # withdrawn since it was indexed
        catalog=catalog,
    )
    encoder = MiniLMTextEncoder()
    content_map = fit_content_map(ids, matrix, catalog, encoder, min_items=10)
    assert content_map is not None
    registry = Registry.for_deployment(settings.deployment)
    publish_index(
        settings.milvus,
        settings.deployment,
        ItemVectors(ids, matrix, None, "two clusters"),
        catalog,
        content_map=content_map,
        registry=registry,
        progress=False,
    )

    app = build_serving_app(settings)
    running = start_server(app.pipeline, settings.serving.model_copy(update={"port": 0}))
    try:
        with RecommenderClient(running.address, timeout_s=30.0) as client:
            before = client.recommend("fan", 25)
            assert not before.fallback, before.fallback_reasons
            assert "s3" not in {i.item_id for i in before.items}  # unavailable: never served

            # The catalogue agent's write: three new films, one of them not available (yet).
            new = [
                ItemMeta("new-space", "Galactic Star Voyage II", ("Sci-Fi",), True, T0 + 1000),
                ItemMeta("new-love", "Love Letters in Paris", ("Romance",), True, T0 + 1000),
                ItemMeta("new-hidden", "Rocket Galaxy Raiders", ("Sci-Fi",), False, T0 + 1000),
            ]
            with ContentIndex.from_settings(settings.milvus, settings.deployment) as content:
                assert content.upsert(content_rows(new, [T0 + 1000] * 3, encoder)) == 3
            app.refresh()  # what the background refresh does every few seconds

            for _ in range(3):
                slate = client.recommend("fan", 25)
                served = {i.item_id: i for i in slate.items}
                assert {"new-space", "new-love"} <= set(served), list(served)
                # placed in the item space by its text: explained by the nearest history item
                assert served["new-space"].source == "content"
                assert served["new-space"].explanation in {
                    f"new, similar to {SPACE[0]}",
                    f"new, similar to {SPACE[1]}",
                }
                assert served["new-love"].explanation == f"new, similar to {ROMANCE[0]}"
                assert "new-hidden" not in served and "s3" not in served
            opted_in = client.recommend("fan", 25, include_unavailable=True)
            assert {"new-hidden", "s3"} <= {i.item_id for i in opted_in.items}
    finally:
        running.stop(0)
        app.close()
