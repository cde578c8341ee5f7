"""The stream worker on a Redis Cluster (issue 21, item 0): the real worker (Faust, the embedded
broker) writing to a local three-master cluster (``redis_cluster_url``) must leave exactly the
outputs that it leaves on a single Redis.

The same MovieLens history (events in event-time order, with slates so that attribution and the
posteriors have work) goes into two namespaces, one on each backend, each with its own worker;
then a deletion and an opt-out request for two of its users. Compared once both have drained:
Feast user and item rows, seen sets, item transitions, bandit posteriors, and the offline logs
(events and slates) — ``stack.namespace_outputs``. On the cluster every write path runs across
slots: the state commits in the namespace's slot, Feast rows and posterior hashes on every master,
and the privacy erasure deletes Feast rows of several slots. (Crashes on the cluster:
``test_crash_replay.py``.)
"""

from __future__ import annotations

import orjson
import pytest
from streams_harness import (
    cluster_settings,
    delete_namespace,
    drained_outputs,
    movielens_history,
    produce,
)

from core.settings import Settings
from features.redis_client import redis_client
from stack.namespace_outputs import differing_outputs
from streams.testing import privacy_request

pytestmark = pytest.mark.integration

RATINGS = 600
TOPICS = ("events", "impressions", "item-updates", "bandit-outcomes", "privacy")


def test_a_worker_on_a_redis_cluster_writes_what_one_on_a_single_redis_writes(
    settings: Settings, redis_cluster_url: str, start_worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Attribution's idleness rule decides slots by wall time (an input silent for 30 s stops
    # holding the watermark back), so two workers drained at different moments may differ by it;
    # off here, the outputs depend on the events alone (the rule has its own tests).
    monkeypatch.setenv("AETHER_STREAM__IDLE_PARTITION_TIMEOUT_S", "0")
    cluster = cluster_settings(settings, redis_cluster_url)
    events, slates = movielens_history(RATINGS)
    users = sorted({key.decode() for key, _ in events if key})
    items = sorted({orjson.loads(value)["item_id"] for _, value in events})
    last_ms = max(orjson.loads(value)["event_time"] for _, value in events)
    deleted, opted_out, kept = users[0], users[1], users[2]
    requests = [
        (user.encode(), orjson.dumps(privacy_request(f"p-{action}", user, action, last_ms + 1)))
        for user, action in ((deleted, "delete"), (opted_out, "opt_out"))
    ]
    backends = {"redis": settings, "cluster": cluster}
    try:
        for target in backends.values():
            start_worker(target)
            produce(target, "impressions", slates)
            produce(target, "events", events)
        before = {name: drained_outputs(s, TOPICS, users, items) for name, s in backends.items()}
        for target in backends.values():
            produce(target, "privacy", requests)
        after = {name: drained_outputs(s, TOPICS, users, items) for name, s in backends.items()}

        for outputs in (before["cluster"], after["cluster"]):
            assert all(outputs[name] for name in outputs), "an output is empty"
        assert {deleted, opted_out, kept} <= before["cluster"]["users"].keys()
        assert differing_outputs(before["redis"], before["cluster"]) == []
        # The requests erased the deleted user's row and seen set and hid the opted-out user's
        # row, on every backend alike.
        assert deleted not in after["cluster"]["users"] and deleted not in after["cluster"]["seen"]
        assert opted_out not in after["cluster"]["users"] and kept in after["cluster"]["users"]
        assert differing_outputs(after["redis"], after["cluster"]) == []
        # The cluster's writes did land on all three masters (Feast rows, posteriors and the
        # stream slot are spread by key).
        client = redis_client(cluster.redis)
        try:
            holding = [
                node.name
                for node in client.get_primaries()
                if any(client.scan_iter(match=f"*{cluster.namespace}*", target_nodes=node))
            ]
        finally:
            client.close()
        assert len(holding) == 3
    finally:
        delete_namespace(cluster)
