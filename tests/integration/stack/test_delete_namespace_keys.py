"""`delete_namespace_keys` removes a deployment's keys from every master of a Redis Cluster, and
nothing else (a single node's SCAN saw only that node's share)."""

import uuid

import pytest
from redis.cluster import RedisCluster

from stack.redis_server import delete_namespace_keys

pytestmark = pytest.mark.integration


def test_a_namespace_is_deleted_from_every_master_and_nothing_else(redis_cluster_url):
    namespace = f"t{uuid.uuid4().hex[:8]}"
    other = f"t{uuid.uuid4().hex[:8]}"
    client = RedisCluster.from_url(redis_cluster_url)
    try:
        ours = [f"{namespace}:state:{n}" for n in range(60)]  # spread over the slots
        ours += [f"feast-row-{n}{namespace}" for n in range(60)]  # Feast's rows end with it
        kept = [f"{other}:state:{n}" for n in range(20)] + [
            f"feast-row-{n}{other}" for n in range(20)
        ]
        for key in ours + kept:
            client.set(key, b"1")
        holding = {client.get_node_from_key(key).name for key in ours}
        assert len(holding) == 3  # the keys really are on all three masters

        assert delete_namespace_keys(redis_cluster_url, namespace, cluster=True) == len(ours)

        assert not any(client.exists(key) for key in ours)
        assert all(client.exists(key) for key in kept)
    finally:
        delete_namespace_keys(redis_cluster_url, other, cluster=True)
        client.close()
