"""Serving reads the seen sets the worker's state store writes (real Redis)."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from core.errors import DependencyUnavailable
from core.settings import Settings
from serving.seen_items import RedisSeenItems
from streams.state_port import StateCommit
from streams.statestore import RedisStateStore

pytestmark = pytest.mark.integration


def test_serving_sees_what_the_worker_committed_and_nothing_after_a_deletion(
    redis_url: str, namespace: str, tmp_path: Path
) -> None:
    from stack.redis_server import delete_namespace_keys

    settings = Settings(namespace=namespace, data_dir=tmp_path, REDIS_URL=redis_url)
    store = RedisStateStore(settings.redis, settings.deployment)
    client = redis.Redis.from_url(redis_url)
    reader = RedisSeenItems(client, namespace)
    try:
        store.commit(StateCommit(seen={"u1": {"i1", "i2"}, "u2": {"i3"}}))
        store.commit(StateCommit(seen={"u1": {"i2", "i9"}}))  # re-delivered and new items
        assert reader.seen_among("u1", ["i9", "i3", "i1", "i5"]) == {"i9", "i1"}
        assert reader.seen_among("u2", ["i1", "i3"]) == {"i3"}
        assert reader.seen_among("stranger", ["i1"]) == set()
        assert reader.seen_among("u1", []) == set()
        # read whole when small enough (one script), else nothing: candidates are asked instead
        assert sorted(reader.members_if_at_most("u1", 3)) == [b"i1", b"i2", b"i9"]
        assert reader.members_if_at_most("u1", 2) is None
        assert list(reader.members_if_at_most("stranger", 2)) == []
        store.commit(StateCommit(forget_users={"u1"}))
        assert reader.seen_among("u1", ["i1", "i2", "i9"]) == set()
        assert list(reader.members_if_at_most("u1", 3)) == []
    finally:
        store.close()
        client.close()
        delete_namespace_keys(redis_url, namespace)


def test_an_unreachable_redis_is_a_dependency_error() -> None:
    client = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    with pytest.raises(DependencyUnavailable):
        RedisSeenItems(client, "nowhere").seen_among("u1", ["i1"])
    with pytest.raises(DependencyUnavailable):
        RedisSeenItems(client, "nowhere").members_if_at_most("u1", 10)
