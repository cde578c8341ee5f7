"""One contract, five stores: the in-memory reference, and Feast/Redis read directly and through
``FeatureStore.get_online_features``, each on the single Redis and on a local three-master Redis
Cluster (``redis_cluster_url``: rows of one batch span slots, so the store writes and reads them
slot by slot). Every test must pass identically on all five."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from core.settings import RedisSettings, Settings
from features.ports import InMemoryFeatureStore
from features.rows import ItemFeatureRow, UserFeatureRow
from features.store import FeastOnlineStore, apply_repo

pytestmark = pytest.mark.integration

T = 1_700_000_000_000


@pytest.fixture(
    params=["memory", "feast-redis", "feast-sdk", "feast-redis-cluster", "feast-sdk-cluster"]
)
def make_store(
    request: pytest.FixtureRequest, make_settings: Callable[[], Settings]
) -> Iterator[Callable[[], Any]]:
    """Factory of stores of one kind; each call is a fresh, separate namespace."""
    opened: list[FeastOnlineStore] = []
    on_cluster = request.param.endswith("-cluster")
    cluster_url = request.getfixturevalue("redis_cluster_url") if on_cluster else ""

    def make() -> Any:
        if request.param == "memory":
            return InMemoryFeatureStore()
        settings = make_settings()
        if on_cluster:  # the namespace's keys die with the session's cluster
            settings = Settings(
                namespace=settings.namespace,
                data_dir=settings.data_dir,
                REDIS_URL=cluster_url,
                redis=RedisSettings(cluster=True),
            )
        if request.param.startswith("feast-sdk"):
            feast = apply_repo(settings.redis, settings.deployment)
            store = FeastOnlineStore(
                settings.redis, settings.deployment, read_path="feast", store=feast
            )
        else:
            store = FeastOnlineStore(settings.redis, settings.deployment, read_path="redis")
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store: Callable[[], Any]) -> Any:
    return make_store()


def user(user_id: str = "u1", t: int = T, **fields: Any) -> UserFeatureRow:
    return UserFeatureRow(user_id=user_id, event_time_ms=t, **fields)


def item(item_id: str = "i1", t: int = T, **fields: Any) -> ItemFeatureRow:
    return ItemFeatureRow(item_id=item_id, event_time_ms=t, **fields)


def test_round_trip_keeps_every_field(store: Any) -> None:
    users = [
        user(
            "u1",
            recent_items=("m1", "m2", "m3"),
            dismissed_items=("m9",),
            activity_counts={"click_24h": 3, "view_1h": 0, "dismiss_7d": 1},
        ),
        user("ü-2 ☃", t=T + 7, recent_items=(), dismissed_items=(), activity_counts={}),
    ]
    items = [
        item(
            "i1",
            popularity=12.375,
            popularity_time_ms=T - 3_600_000,
            impressions=40,
            clicks=3,
            ctr=0.0731,
            created_time_ms=T - 86_400_000,
            title="Toy Story (1995)",
            categories=("Animation", "Children's"),
            available=True,
        ),
        item("i2", created_time_ms=None, title="", categories=(), available=False),
    ]
    store.write_users(users)
    store.write_items(items)
    assert store.read_users(["u1", "ü-2 ☃"]) == {u.user_id: u for u in users}
    assert store.read_items(["i1", "i2"]) == {i.item_id: i for i in items}


def test_older_write_never_replaces_newer(store: Any) -> None:
    newer = user(t=T + 1000, recent_items=("new",))
    store.write_users([newer])
    store.write_users([user(t=T, recent_items=("old",))])
    assert store.read_users(["u1"]) == {"u1": newer}
    newer_item = item(t=T + 1000, clicks=5)
    store.write_items([newer_item])
    store.write_items([item(t=T + 999, clicks=1)])
    assert store.read_items(["i1"]) == {"i1": newer_item}


def test_equal_event_time_later_write_wins(store: Any) -> None:
    # Several rows routinely share an event time (whole-second timestamps); the later one has more.
    store.write_users([user(recent_items=("a",))])
    latest = user(recent_items=("a", "b"))
    store.write_users([latest])
    assert store.read_users(["u1"]) == {"u1": latest}


def test_rows_of_one_entity_in_one_batch_apply_in_order(store: Any) -> None:
    store.write_users(
        [user("u1", t=T + 5, recent_items=("x",)), user("u1", t=T, recent_items=("stale",))]
    )
    store.write_users(
        [user("u2", t=T, recent_items=("first",)), user("u2", t=T + 5, recent_items=("second",))]
    )
    rows = store.read_users(["u1", "u2"])
    assert rows["u1"].recent_items == ("x",)
    assert rows["u2"].recent_items == ("second",)


def test_batch_read_returns_only_existing_entities(store: Any) -> None:
    store.write_users([user(f"u{i}") for i in range(5)])
    store.write_items([item(f"i{i}") for i in range(0, 200, 2)])
    got_users = store.read_users(["u0", "nobody", "u4", "u0"])
    assert set(got_users) == {"u0", "u4"}
    got_items = store.read_items([f"i{i}" for i in range(200)])
    assert set(got_items) == {f"i{i}" for i in range(0, 200, 2)}
    assert store.read_users([]) == {}
    assert store.read_items(["missing"]) == {}


def test_delete_users_forgets_only_those_users(store: Any) -> None:
    store.write_users([user("u1"), user("u2"), user("u3")])
    store.write_items([item("u1")])  # same id, other entity: untouched
    store.delete_users(["u1", "u3", "never-written"])
    assert set(store.read_users(["u1", "u2", "u3"])) == {"u2"}
    assert set(store.read_items(["u1"])) == {"u1"}
    # A deleted user starts afresh: even an older row is accepted again.
    store.write_users([user("u1", t=T - 1)])
    assert store.read_users(["u1"])["u1"].event_time_ms == T - 1


def test_empty_batches_are_no_ops(store: Any) -> None:
    store.write_users([])
    store.write_items([])
    store.delete_users([])
    assert store.read_users(["u1"]) == {}


def test_two_namespaces_share_nothing(make_store: Callable[[], Any]) -> None:
    first, second = make_store(), make_store()
    first.write_users([user("u1", recent_items=("first",))])
    second.write_users([user("u1", recent_items=("second",))])
    first.write_items([item("i1", title="first")])
    assert first.read_users(["u1"])["u1"].recent_items == ("first",)
    assert second.read_users(["u1"])["u1"].recent_items == ("second",)
    assert second.read_items(["i1"]) == {}
    second.delete_users(["u1"])
    assert set(first.read_users(["u1"])) == {"u1"}
