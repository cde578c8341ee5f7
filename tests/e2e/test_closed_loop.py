"""End to end on real components: events → Kafka (Tansu) → `aether worker` (Faust) → Feast/Redis,
items → Milvus Lite, and a gRPC call over a real channel whose answer follows the new events.

The tests share one `aether worker` (its start-up is most of a test's cost) on a namespace of the
module's; they keep apart by their own users and by event time: each test's clock starts a day
after the previous one's, because the worker's partitions keep their event-time watermarks.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from confluent_kafka import Consumer
from prometheus_client import REGISTRY

from benchmarks.serve_server import child_env
from core.settings import Settings
from events import CatalogItem, Impression, Interaction, PrivacyRequest, decode, encode
from features.store import FeastOnlineStore, apply_repo
from retrieval.catalog import ItemCatalog, ItemMeta
from retrieval.embeddings import save_embeddings
from retrieval.index import ItemIndex
from retrieval.movielens_catalog import item_rows
from serving.build_pipeline import build_serving_app, embeddings_path
from serving.client import RecommenderClient
from serving.server import start_server
from streams.partitioning import partition_for_key
from streams.progress import wait_until_caught_up
from streams.publish import producer_for

pytestmark = pytest.mark.e2e

T0 = 1_700_000_000_000
DAY_MS = 86_400_000
ALPHA = [f"a{n}" for n in range(20)]
BETA = [f"b{n}" for n in range(20)]


def start_serving(settings: Settings) -> tuple[Any, Any]:
    """The pipeline and a gRPC server on a free port, with a request budget a loaded, shared
    machine keeps (the default 100 ms lets the ANN source time out into a flagged fallback)."""
    serving = settings.serving.model_copy(update={"deadline_ms": 3000})
    app = build_serving_app(settings.model_copy(update={"serving": serving}))
    return app, start_server(app.pipeline, serving.model_copy(update={"port": 0}))


@dataclass
class SharedWorker:
    settings: Settings  # the namespace, broker, Redis and data folder of the worker
    process: subprocess.Popen[bytes]
    days: Iterator[int]

    def clock(self) -> int:
        """A test's start of event time, a day after the previous test's."""
        return T0 + next(self.days) * DAY_MS


@pytest.fixture(scope="module")
def worker(
    kafka_bootstrap: str,
    redis_url: str,
    make_topics: Callable[[Settings], list[str]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[SharedWorker]:
    """One `aether worker` for the module, on a fresh namespace with the feature repo applied."""
    from stack.redis_server import delete_namespace_keys

    folder = tmp_path_factory.mktemp("e2e")
    settings = Settings(
        namespace=f"t{uuid.uuid4().hex[:12]}",
        data_dir=folder / ".aether",
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        REDIS_URL=redis_url,
        MILVUS_URI=str(folder / "milvus.db"),  # the worker's (content collection); each test
        # indexes and serves from a file of its own
    )
    make_topics(settings)
    apply_repo(settings.redis, settings.deployment)
    with (folder / "worker.log").open("wb") as log:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "aether"), "worker"],
            env=child_env(settings),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield SharedWorker(settings, process, itertools.count())
    finally:
        process.kill()
        process.wait(10)
        delete_namespace_keys(redis_url, settings.namespace)


@pytest.fixture
def settings(worker: SharedWorker, milvus_uri: str) -> Settings:
    """The shared worker's namespace and stores, with this test's own Milvus Lite file."""
    shared = worker.settings
    return Settings(
        namespace=shared.namespace,
        data_dir=shared.data_dir,
        KAFKA_BOOTSTRAP_SERVERS=shared.kafka.bootstrap_servers,
        REDIS_URL=shared.redis.url.get_secret_value(),
        MILVUS_URI=milvus_uri,
    )


def index_two_clusters(settings: Settings) -> ItemCatalog:
    """40 items in two well-separated clusters, indexed in Milvus and saved for serving."""
    rng = np.random.default_rng(0)
    centres = np.eye(8, dtype=np.float32)[:2] * 5
    matrix = np.vstack(
        [centres[0] + rng.normal(0, 0.3, (20, 8)), centres[1] + rng.normal(0, 0.3, (20, 8))]
    )
    catalog = ItemCatalog(
        [ItemMeta(i, f"Alpha {i}", ("A",), True, T0) for i in ALPHA]
        + [ItemMeta(i, f"Beta {i}", ("B",), True, T0) for i in BETA]
    )
    ids = ALPHA + BETA
    path = embeddings_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_embeddings(path, ids, matrix.astype(np.float32))
    with ItemIndex.from_settings(settings.milvus, settings.deployment) as index:
        index.publish(item_rows(ids, matrix.astype(np.float32), catalog), progress=False)
    return catalog


def publish(settings: Settings, catalog: ItemCatalog, interactions: list[Interaction]) -> None:
    producer = producer_for(settings)  # the project factory: murmur2, as the worker partitions
    for meta in catalog.values():
        item = CatalogItem(
            event_id=f"cat-{meta.item_id}",
            item_id=meta.item_id,
            title=meta.title,
            categories=meta.categories,
            created_time=T0,
            event_time=T0,
        )
        producer.produce(settings.topic("items"), key=meta.item_id.encode(), value=encode(item))
    for event in interactions:
        producer.produce(settings.topic("events"), key=event.user_id.encode(), value=encode(event))
    assert producer.flush(30) == 0


def views(user: str, items: list[str], start_ms: int, kind: str = "view") -> list[Interaction]:
    return [
        Interaction(
            event_id=f"{user}-{kind}-{item}",
            event_type=kind,
            user_id=user,
            item_id=item,
            event_time=start_ms + n * 1000,
        )
        for n, item in enumerate(items)
    ]


def wait_for(predicate: Callable[[], bool], what: str, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def _withheld_opted_out() -> float:
    value = REGISTRY.get_sample_value("aether_impressions_withheld_total", {"reason": "opted_out"})
    return value or 0.0


def read_impressions(settings: Settings, request_ids: set[str]) -> dict[str, Impression]:
    """The namespace's logged impressions, read until those of ``request_ids`` are there."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": f"{settings.namespace}-e2e-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
        }
    )
    consumer.subscribe([settings.topic("impressions")])
    found: dict[str, Impression] = {}
    deadline = time.monotonic() + 60
    while not request_ids <= found.keys() and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            impression = decode(message.value(), Impression)
            found[impression.request_id] = impression
    consumer.close()
    return found


def test_new_events_change_the_grpc_answer(settings: Settings, worker: SharedWorker) -> None:
    t0 = worker.clock()
    catalog = index_two_clusters(settings)
    user = "u-e2e"
    publish(
        settings,
        catalog,
        views(user, ALPHA[:5], t0 + 60_000) + views("other", BETA[:3], t0 + 60_000),
    )

    store = FeastOnlineStore(settings.redis, settings.deployment)
    wait_for(
        lambda: (
            store.read_users([user]).get(user) is not None
            and len(store.read_users([user])[user].recent_items) == 5
        ),
        "the user's sequence in Feast",
    )
    wait_for(lambda: len(store.read_items(ALPHA + BETA)) == 40, "the catalogue in the online store")

    app, running = start_serving(settings)
    try:
        with RecommenderClient(running.address, timeout_s=5) as client:
            client.wait_until_serving()
            before = client.recommend(user, k=5)
            assert len(before.items) == 5
            assert not {i.item_id for i in before.items} & set(ALPHA[:5]), "seen items came back"
            ranked = [i for i in before.items if i.source != "explore"]  # one slot explores
            assert len(ranked) == 4 and sum(i.item_id in ALPHA for i in ranked) >= 3, before.items
            assert all(0 < i.propensity <= 1 for i in before.items)
            assert any(
                i.source == "ann" and i.explanation.startswith("because you watched Alpha")
                for i in before.items
            )

            publish(settings, ItemCatalog(), views(user, BETA[:12], t0 + 3_600_000, kind="click"))
            wait_for(
                lambda: len(store.read_users([user])[user].recent_items) == 17,
                "the new clicks in Feast",
            )
            app.refresh()
            after = client.recommend(user, k=5)
            assert not {i.item_id for i in after.items} & set(ALPHA[:5] + BETA[:12])
            ranked = [i for i in after.items if i.source != "explore"]
            assert sum(i.item_id in BETA for i in ranked) >= 3, after.items
            assert [i.item_id for i in after.items] != [i.item_id for i in before.items]

            cold = client.recommend("never-seen-user", k=3)
            assert len(cold.items) == 3 and all(i.source != "ann" for i in cold.items)
    finally:
        running.stop(0)
        app.close()
        store.close()

    wanted = {before.request_id, after.request_id, cold.request_id}
    impressions = read_impressions(settings, wanted)
    assert wanted <= set(impressions)
    logged = impressions[after.request_id]
    assert logged.user_id == user
    assert [i.item_id for i in logged.items] == [i.item_id for i in after.items]


def test_an_opted_out_user_gets_non_personalised_answers_and_no_new_features(
    settings: Settings, worker: SharedWorker
) -> None:
    t0 = worker.clock()
    catalog = index_two_clusters(settings)
    user = "u-private"
    publish(settings, catalog, views(user, ALPHA[:5], t0 + 60_000))
    store = FeastOnlineStore(settings.redis, settings.deployment)
    wait_for(lambda: user in store.read_users([user]), "the user's features")

    app, running = start_serving(settings)
    try:
        with RecommenderClient(running.address, timeout_s=5) as client:
            client.wait_until_serving()
            personal = client.recommend(user, k=5)
            assert any(i.source == "ann" for i in personal.items)

            producer = producer_for(
                settings
            )  # the project factory: murmur2, as the worker partitions
            opt_out = PrivacyRequest(
                event_id="p-1", user_id=user, action="opt_out", event_time=t0 + 120_000
            )
            producer.produce(settings.topic("privacy"), key=user.encode(), value=encode(opt_out))
            assert producer.flush(30) == 0
            wait_for(lambda: user not in store.read_users([user]), "the online row deleted")

            publish(settings, ItemCatalog(), views(user, BETA[:6], t0 + 180_000, kind="click"))
            wait_until_caught_up(settings, 120)
            assert user not in store.read_users([user]), (
                "an opted-out user's events became features"
            )
            withheld_before = _withheld_opted_out()
            generic = client.recommend(user, k=5)
            assert {i.source for i in generic.items} <= {"popular", "fresh", "content", "explore"}
            assert not any(i.explanation.startswith("because you watched") for i in generic.items)
            # Served, but not published: the impression would carry the user's id into a topic.
            assert _withheld_opted_out() == withheld_before + 1
            # A later slate of another user on the same partition is published after it: once
            # that one is read, the opted-out user's slate would have been read too.
            partitions = settings.kafka.partitions
            same = partition_for_key(user.encode(), partitions)
            other = next(
                f"u-after-{n}"
                for n in range(10_000)
                if partition_for_key(f"u-after-{n}".encode(), partitions) == same
            )
            later = client.recommend(other, k=5)
            logged = read_impressions(settings, {personal.request_id, later.request_id})
            assert {personal.request_id, later.request_id} <= logged.keys()
            assert generic.request_id not in logged
    finally:
        running.stop(0)
        app.close()
        store.close()
