"""The Feast side of the online store: ``apply_repo``, layout compatibility with Feast's own
writer and reader, Feast's own tie behaviour (why we write with our compare-and-set), errors."""

from __future__ import annotations

import random
import threading

import pandas as pd
import pytest
from pydantic import SecretStr

from core.errors import DependencyUnavailable
from core.settings import RedisSettings, Settings
from features.rows import ItemFeatureRow, UserFeatureRow
from features.schema import ACTIVITY_COUNT_FEATURES, ITEM_PUSH_SOURCE, USER_PUSH_SOURCE
from features.store import FeastOnlineStore, apply_repo, feast_dir

pytestmark = pytest.mark.integration

T = 1_700_000_000_000


def test_apply_repo_is_idempotent_and_namespaced(settings: Settings) -> None:
    store = apply_repo(settings.redis, settings.deployment)
    again = apply_repo(settings.redis, settings.deployment)
    assert store.project == settings.namespace
    assert (feast_dir(settings.deployment) / "registry.db").exists()
    names = sorted(v.name for v in again.list_feature_views())
    assert names == ["item_features", "user_features"]
    assert sorted(e.name for e in again.list_entities()) == ["item", "user"]
    features = {f.name for f in again.get_feature_view("user_features").features}
    assert set(ACTIVITY_COUNT_FEATURES) <= features


def _user_push_frame(t: int, recent: list[str], clicks: int | None) -> pd.DataFrame:
    row: dict[str, object] = {name: None for name in ACTIVITY_COUNT_FEATURES}
    row.update(
        user_id="u1",
        event_timestamp=pd.Timestamp(t, unit="ms", tz="UTC"),
        created_timestamp=pd.Timestamp(0, unit="ms", tz="UTC"),  # the sources' tie-breaker column
        event_time_ms=t,
        recent_items=recent,
        dismissed_items=[],
        recent_interactions=recent,
        click_24h=clicks,
    )
    frame = pd.DataFrame([row])
    for name in ACTIVITY_COUNT_FEATURES:
        frame[name] = frame[name].astype("Int64")
    return frame


def test_rows_pushed_through_feast_read_back_on_both_paths(settings: Settings) -> None:
    feast = apply_repo(settings.redis, settings.deployment)
    feast.push(USER_PUSH_SOURCE, _user_push_frame(T, ["a", "b"], 4))
    feast.push(
        ITEM_PUSH_SOURCE,
        pd.DataFrame(
            [
                {
                    "item_id": "i1",
                    "event_timestamp": pd.Timestamp(T, unit="ms", tz="UTC"),
                    "created_timestamp": pd.Timestamp(0, unit="ms", tz="UTC"),
                    "event_time_ms": T,
                    "popularity": 2.5,
                    "popularity_time_ms": T,
                    "impressions": 10,
                    "clicks": 1,
                    "ctr": 0.1,
                    "created_time_ms": T - 5,
                    "title": "x",
                    "categories": ["c"],
                    "available": True,
                }
            ]
        ),
    )
    expected_user = UserFeatureRow("u1", T, ("a", "b"), (), {"click_24h": 4}, ("a", "b"))
    expected_item = ItemFeatureRow("i1", T, 2.5, T, 10, 1, 0.1, T - 5, "x", ("c",), True)
    for path in ("redis", "feast"):
        store = FeastOnlineStore(
            settings.redis,
            settings.deployment,
            read_path=path,  # type: ignore[arg-type]
            store=feast,
        )
        assert store.read_users(["u1"]) == {"u1": expected_user}, path
        assert store.read_items(["i1"]) == {"i1": expected_item}, path


def test_feast_own_writer_drops_a_row_with_an_equal_timestamp(settings: Settings) -> None:
    # Characterises Feast 0.67: ``online_write_batch`` skips rows whose timestamp is <= the stored
    # one, so a later row with the same event time is lost. Our writer keeps the later row.
    feast = apply_repo(settings.redis, settings.deployment)
    feast.push(USER_PUSH_SOURCE, _user_push_frame(T, ["a"], 1))
    feast.push(USER_PUSH_SOURCE, _user_push_frame(T, ["a", "b"], 2))
    store = FeastOnlineStore(settings.redis, settings.deployment, store=feast)
    assert store.read_users(["u1"])["u1"].recent_items == ("a",)
    store.write_users([UserFeatureRow("u1", T, ("a", "b"), (), {"click_24h": 2})])
    assert store.read_users(["u1"])["u1"].recent_items == ("a", "b")
    feast.push(USER_PUSH_SOURCE, _user_push_frame(T - 1, ["old"], 0))  # Feast also ignores older
    assert store.read_users(["u1"])["u1"].recent_items == ("a", "b")


def test_unreachable_redis_raises_dependency_unavailable(settings: Settings) -> None:
    down = settings.model_copy(
        update={"redis": RedisSettings(url=SecretStr("redis://127.0.0.1:1/0"))}
    )
    store = FeastOnlineStore(down.redis, down.deployment)
    with pytest.raises(DependencyUnavailable, match="redis"):
        store.write_users([UserFeatureRow("u1", T)])
    with pytest.raises(DependencyUnavailable, match="redis"):
        store.read_items(["i1"])
    with pytest.raises(DependencyUnavailable, match="redis"):
        store.delete_users(["u1"])


def test_concurrent_writers_leave_the_newest_row(settings: Settings) -> None:
    # The compare-and-set runs inside Redis, so no interleaving of two writers can let an older
    # row overwrite a newer one (Feast's read-then-write in two round trips could).
    times = list(range(T, T + 400))
    random.Random(7).shuffle(times)
    halves = [times[::2], times[1::2]]
    stores = [FeastOnlineStore(settings.redis, settings.deployment) for _ in halves]

    def write(store: FeastOnlineStore, stamps: list[int]) -> None:
        for start in range(0, len(stamps), 10):
            store.write_users(
                [UserFeatureRow("u1", t, (str(t),)) for t in stamps[start : start + 10]]
            )

    threads = [
        threading.Thread(target=write, args=pair) for pair in zip(stores, halves, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert stores[0].read_users(["u1"])["u1"] == UserFeatureRow("u1", T + 399, (str(T + 399),))
