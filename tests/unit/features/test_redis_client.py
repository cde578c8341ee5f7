"""The Redis client factory and the slot grouping the cluster paths use (no server contacted:
``redis.Redis`` connects lazily; the cluster client is tested against a real cluster in
``tests/integration/features/test_contract.py`` and ``tests/integration/streams``)."""

from __future__ import annotations

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from core.settings import RedisSettings, Settings
from features.redis_client import positions_by_slot, redis_client


def test_the_default_deployment_gets_a_single_redis_client_with_its_timeouts() -> None:
    settings = RedisSettings(url="redis://cache.internal:6380/3")
    client = redis_client(settings, timeout_s=0.1, connect_timeout_s=2.0)
    try:
        assert type(client) is redis.Redis
        options = client.connection_pool.connection_kwargs
        assert (options["host"], options["port"], options["db"]) == ("cache.internal", 6380, 3)
        assert (options["socket_timeout"], options["socket_connect_timeout"]) == (0.1, 2.0)
    finally:
        client.close()


def test_the_cluster_flag_comes_from_the_environment_and_survives_redis_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings().redis.cluster is False
    monkeypatch.setenv("AETHER_REDIS__CLUSTER", "true")
    monkeypatch.setenv("REDIS_URL", "redis://10.0.0.5:7000")
    settings = Settings()
    assert settings.redis.cluster is True
    assert settings.redis.url.get_secret_value() == "redis://10.0.0.5:7000"


def test_keys_are_grouped_by_their_cluster_slot_in_order() -> None:
    # Slots from the Redis Cluster specification: "foo" is in 12182, "bar" in 5061; a {tag}
    # puts a key in its tag's slot.
    keys: list[bytes | str] = [b"foo", "bar", "{foo}:x", b"{bar}:y", "foo"]
    assert positions_by_slot(keys) == {12182: [0, 2, 4], 5061: [1, 3]}


@given(st.lists(st.binary(max_size=12), max_size=40))
def test_grouping_keeps_every_key_once_with_its_slot(keys: list[bytes]) -> None:
    groups = positions_by_slot(list(keys))
    assert sorted(p for positions in groups.values() for p in positions) == list(range(len(keys)))
    for slot, positions in groups.items():
        assert positions == sorted(positions)
        assert all(key_slot(keys[p]) == slot for p in positions)
