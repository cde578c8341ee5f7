"""Feast rows on a Redis Cluster (``redis_cluster_url``, three masters): what the contract test
does not show — one batch spans every master, and a node that lost its scripts (restart,
failover: ``NOSCRIPT``) gets the compare-and-set loaded again instead of failing the batch."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from core.settings import RedisSettings, Settings
from features.redis_client import positions_by_slot
from features.redis_layout import CAS_ROWS_SCRIPT, FeastRedisLayout
from features.rows import UserFeatureRow
from features.schema import USER_FEATURE_TYPES, USER_JOIN_KEY, USER_VIEW
from features.store import FeastOnlineStore

pytestmark = pytest.mark.integration

T = 1_700_000_000_000
CAS_ROWS_SHA = hashlib.sha1(CAS_ROWS_SCRIPT.encode()).hexdigest()


def test_a_batch_over_every_master_survives_lost_scripts(
    redis_cluster_url: str, namespace: str, tmp_path: Path
) -> None:
    settings = Settings(
        namespace=namespace,
        data_dir=tmp_path,
        REDIS_URL=redis_cluster_url,
        redis=RedisSettings(cluster=True),
    )
    store = FeastOnlineStore(settings.redis, settings.deployment)
    try:
        client = store.client
        ids = [f"u{n}" for n in range(60)]
        rows = [UserFeatureRow(user_id=u, event_time_ms=T, recent_items=("a",)) for u in ids]
        rows.append(UserFeatureRow(user_id="u7", event_time_ms=T, recent_items=("a", "b")))
        layout = FeastRedisLayout(
            project=namespace,
            view=USER_VIEW,
            join_key=USER_JOIN_KEY,
            feature_types=USER_FEATURE_TYPES,
        )
        keys = [layout.key(u) for u in ids]
        assert len({client.get_node_from_key(k).name for k in keys}) == 3
        assert len(positions_by_slot(keys)) > 50  # one script call per slot

        store.write_users(rows)
        got = store.read_users(ids)
        assert sorted(got) == sorted(ids)
        assert got["u7"].recent_items == ("a", "b")  # a tie: the later row of the batch wins

        client.script_flush()  # redis-py sends it to every primary
        assert client.script_exists(CAS_ROWS_SHA) == [False]
        store.write_users([UserFeatureRow(user_id="u3", event_time_ms=T + 1, recent_items=("c",))])
        assert store.read_users(["u3"])["u3"].recent_items == ("c",)
    finally:
        store.delete_users([f"u{n}" for n in range(60)])
        assert store.read_users([f"u{n}" for n in range(60)]) == {}
        store.close()
