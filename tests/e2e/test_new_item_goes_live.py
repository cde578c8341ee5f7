"""A new item goes live with nothing restarted, on real components end to end: a catalogue update
published on ``<ns>.items`` → the real ``aether worker`` (its catalogue agent embeds the text with
the shipped all-MiniLM-L6-v2 into the Milvus Lite content collection) → the real ``aether serve``
(its background refresh finds the item in the content collection and maps it into the serving
release's item space) → a gRPC answer that recommends it to the user whose taste fits it, with
"new, similar to <a film that user watched>", within a bounded wait. An item published as
unavailable is in no answer, and the same server does show it to a request that opts in (so it
did reach serving: leaving it out is the filter's doing).

The order is the README's: ``aether index`` (here its library call, ``publish_index``, with a
MiniLM content map fitted on the indexed titles), then ``aether worker``, then ``aether serve``.
The worker holds the Milvus Lite file from its first catalogue update on and shares its socket;
the server, started after it, reaches the file through that socket (``retrieval.milvus_lite``).
Unit-level checks of each side: ``tests/integration/streams/test_catalogue_content.py`` and
``tests/integration/serving/test_new_items.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from benchmarks.lifecycle_processes import AetherProcess, start_worker, wait_until
from core.settings import Settings
from core.subprocesses import free_loopback_port
from features.store import apply_repo
from lifecycle.publish import publish_index
from lifecycle.registry import Registry
from retrieval.catalog import ItemCatalog, ItemMeta
from retrieval.content import MiniLMTextEncoder, fit_content_map
from retrieval.item_vectors import ItemVectors
from retrieval.milvus_lite import release_milvus_lite
from serving.client import RecommenderClient
from serving.domain import Slate
from streams.progress import wait_until_caught_up
from streams.publish import producer_for

pytestmark = pytest.mark.e2e

T0 = 1_700_000_000_000
SPACE = ["Star Voyage", "Galaxy Raiders", "The Last Astronaut", "Mars Colony", "Nebula Wars",
         "Rocket to the Moon", "Alien Frontier", "Orbit of Doom", "Interstellar Drift",
         "Comet Hunters"]  # fmt: skip
ROMANCE = ["Love in Paris", "The Wedding Planner's Heart", "Summer Kisses", "A Valentine Story",
           "Falling for You", "Letters to My Love", "Romance in Rome", "The Bride's Secret",
           "Sweetheart Lane", "Moonlit Proposal"]  # fmt: skip
HISTORY = {"astro-fan": ("s0", "s1"), "romance-fan": ("r0", "r1")}
OWN_NEW_ITEM = {"astro-fan": "new-space", "romance-fan": "new-love"}  # the new item of their kind
NEW = [  # (item, title, categories, available)
    ("new-space", "Galactic Star Voyage II", ["Sci-Fi"], True),
    ("new-love", "Love Letters in Paris", ["Romance"], True),
    ("new-hidden", "Rocket Galaxy Raiders", ["Sci-Fi"], False),
]
K = 25  # more than the catalogue holds: every eligible item is in the slate


def indexed_catalogue() -> tuple[ItemCatalog, list[str], np.ndarray]:
    """20 items in two clusters of the item space: space films on one axis, romances on another."""
    rng = np.random.default_rng(0)
    metas, rows = [], []
    for n, title in enumerate(SPACE):
        metas.append(ItemMeta(f"s{n}", title, ("Sci-Fi", "Adventure"), True, T0 - 10**10))
        rows.append([1.0, 0.0, 0.0, 0.0, *rng.normal(0, 0.05, 4)])
    for n, title in enumerate(ROMANCE):
        metas.append(ItemMeta(f"r{n}", title, ("Romance", "Drama"), True, T0 - 10**10))
        rows.append([0.0, 1.0, 0.0, 0.0, *rng.normal(0, 0.05, 4)])
    return ItemCatalog(metas), [m.item_id for m in metas], np.asarray(rows, dtype=np.float32)


def catalogue_update(
    item: str, title: str, categories: list[str], t: int, **extra: object
) -> bytes:
    body = {"event_id": f"{item}@{t}", "item_id": item, "title": title,
            "categories": categories, "event_time": t}  # fmt: skip
    return orjson.dumps(body | extra)


def index_release(settings: Settings) -> None:
    """What ``aether index`` leaves: the item vectors in Milvus with a content map (MiniLM text →
    item space), registered and promoted as release 1."""
    catalog, ids, matrix = indexed_catalogue()
    content_map = fit_content_map(ids, matrix, catalog, MiniLMTextEncoder(), min_items=10)
    assert content_map is not None
    publish_index(
        settings.milvus,
        settings.deployment,
        ItemVectors(ids, matrix, None, "two clusters"),
        catalog,
        content_map=content_map,
        registry=Registry.for_deployment(settings.deployment),
        progress=False,
    )
    release_milvus_lite(settings.milvus.uri)  # `aether index` exits: the file is free again


def publish_history(settings: Settings) -> None:
    """The indexed items' catalogue updates (titles for the explanations) and each fan's views."""
    producer = producer_for(settings)
    catalog, ids, _ = indexed_catalogue()
    for item in ids:
        meta = catalog[item]
        value = catalogue_update(item, meta.title, list(meta.categories), T0)
        producer.produce(settings.topic("items"), key=item, value=value)
    for n, (user, items) in enumerate(sorted(HISTORY.items())):
        for m, item in enumerate(items):
            event = {"event_id": f"{user}-{m}", "event_type": "view", "user_id": user,
                     "item_id": item, "event_time": T0 + 1_000 * (n * 10 + m + 1)}  # fmt: skip
            producer.produce(settings.topic("events"), key=user, value=orjson.dumps(event))
    assert producer.flush(30) == 0


def publish_new_items(settings: Settings) -> None:
    producer = producer_for(settings)
    for item, title, categories, available in NEW:
        value = catalogue_update(item, title, categories, T0 + 60_000, available=available)
        producer.produce(settings.topic("items"), key=item, value=value)
    assert producer.flush(30) == 0


def test_a_published_item_reaches_the_users_it_fits_and_an_unavailable_one_never_does(
    settings: Settings, make_topics, tmp_path: Path
) -> None:
    make_topics(settings)
    apply_repo(settings.redis, settings.deployment)
    index_release(settings)
    worker = start_worker(settings, tmp_path / "worker.log", embed_catalogue=True)
    serve = None
    try:
        publish_history(settings)
        wait_until_caught_up(settings, 300)  # the users' rows exist when the server starts
        port = free_loopback_port()
        serve = AetherProcess.start(
            settings,
            tmp_path / "serve.log",
            "serve",
            "--port",
            str(port),
            "--metrics-port",
            "0",
            "--refresh-s",
            "0.5",
            env={
                "AETHER_SERVING__DEADLINE_MS": "5000",  # a budget a shared, loaded machine keeps
                "AETHER_BANDIT__EXPLORATION_SLOTS": "0",  # slates follow the release alone
            },
        )
        serve.wait_for_log("serving aetherrec.v1.Recommender", timeout_s=300)
        with RecommenderClient(f"127.0.0.1:{port}", timeout_s=30.0) as client:
            before = client.recommend("astro-fan", K)
            assert before.model_version == "retrieval-only@items_v1", before.model_version
            assert not {i.item_id for i in before.items} & {item for item, *_ in NEW}

            publish_new_items(settings)
            answers: list[Slate] = []

            latest: dict[str, Slate] = {}

            def new_items_placed() -> bool:
                """Both new items in both users' slates, each user's own one placed by its text
                (it can reach a slate through the popular or fresh source a catalogue refresh
                before the content source has it: wait for the content explanation)."""
                assert worker.running and serve.running, worker.log_tail() + serve.log_tail()
                latest.update((user, client.recommend(user, K)) for user in sorted(HISTORY))
                answers.extend(latest.values())
                return all(
                    {"new-space", "new-love"} <= {i.item_id for i in s.items}
                    for s in latest.values()
                ) and all(
                    i.explanation.startswith("new, similar to")
                    for user, own in OWN_NEW_ITEM.items()
                    for i in latest[user].items
                    if i.item_id == own
                )

            wait_until(new_items_placed, "the new items placed in both users' slates", 180)
            opted_in = client.recommend("astro-fan", K, include_unavailable=True)
            astro, romance = latest["astro-fan"], latest["romance-fan"]
    finally:
        if serve is not None:
            assert serve.stop() == 0, serve.log_tail()
        worker.kill()

    assert all("new-hidden" not in {i.item_id for i in s.items} for s in answers)
    assert "new-hidden" in {i.item_id for i in opted_in.items}  # it reached serving
    # Each new item is placed by its text near the films of its kind: the user who watched films
    # of that kind gets it explained by one of them.
    astro_items = {i.item_id: i for i in astro.items}
    romance_items = {i.item_id: i for i in romance.items}
    assert astro_items["new-space"].explanation in {f"new, similar to {t}" for t in SPACE[:2]}
    assert romance_items["new-love"].explanation in {f"new, similar to {t}" for t in ROMANCE[:2]}
