"""Every output the stream worker writes for a namespace, read back in comparable form.

Two deployments (namespaces) fed the same events must end with equal outputs however their
workers cut the stream into batches: after crashes (``tests/integration/streams/
test_crash_replay.py``) or with the partitions spread over several workers (``aether bench
ingest``'s scale-out check). Both read them with :func:`namespace_outputs` and compare with
:func:`differing_outputs`.

Outputs: the Feast online rows of the given users and items, their seen sets (the items each
user interacted with, which serving never recommends again), the item transitions with each
anchor's total weight and the bandit posterior hashes (all of the namespace), and optionally the
offline logs (events and slates; written in the worker's background thread, so read them once the
worker has drained). Redis is read through the deployment's client (``features.redis_client``):
a single Redis or a cluster.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, cast

from core.settings import Settings
from features.redis_client import redis_client

# Transition weights are float increments summed per batch: batches cut elsewhere sum in another
# order, which moves the last bits. Every other output must be equal exactly.
TRANSITION_REL_TOL = 1e-9


def stored_transition_totals(settings: Settings) -> dict[str, float]:
    """Every anchor's total outgoing weight (``features.transition_store``: every increment
    added, none trimmed away), leaving out totals of zero: an anchor whose transitions were all
    retracted keeps a field of ±0 when the retraction came in a later batch than the increment,
    and none when both fell into one batch (their sum never left the worker), so its presence
    depends on batching while its meaning, no weight, does not."""
    from features.transition_store import RETRACTED, transition_key_prefix

    client = redis_client(settings.redis)
    try:
        totals = client.hgetall(transition_key_prefix(settings.namespace) + ":i2i_total")
    finally:
        client.close()
    weights = {
        anchor.decode(): float(total) for anchor, total in cast(dict[bytes, bytes], totals).items()
    }
    return {anchor: total for anchor, total in weights.items() if abs(total) > RETRACTED}


def stored_transitions(settings: Settings) -> dict[tuple[str, str], float]:
    """Every (anchor, item) weight in the namespace's transition store in Redis."""
    from features.transition_store import transition_key_prefix

    client = redis_client(settings.redis)
    prefix = transition_key_prefix(settings.namespace) + ":i2i:"
    weights: dict[tuple[str, str], float] = {}
    try:
        for key in client.scan_iter(f"{prefix}*"):
            anchor = key.decode()[len(prefix) :]
            members = cast(list[tuple[bytes, float]], client.zrange(key, 0, -1, withscores=True))
            for item, weight in members:
                weights[(anchor, item.decode())] = weight
    finally:
        client.close()
    return weights


def stored_posteriors(settings: Settings) -> dict[str, dict[bytes, bytes]]:
    """The posterior hashes serving reads (``bandits.posterior``), by segment."""
    client = redis_client(settings.redis)
    prefix = settings.redis_key("bandit", "posterior") + ":"
    try:
        return {
            key.decode()[len(prefix) :]: cast(dict[bytes, bytes], client.hgetall(key))
            for key in client.scan_iter(f"{prefix}*")
        }
    finally:
        client.close()


def stored_seen(settings: Settings, users: Sequence[str]) -> dict[str, list[str]]:
    """The seen set of each given user that has one (``streams.statestore.seen_items_key``), by
    user id (the key hashes the id with the namespace), items sorted."""
    from streams.statestore import seen_items_key

    client = redis_client(settings.redis)
    try:
        pipe = client.pipeline(transaction=False)
        for user in users:
            pipe.smembers(seen_items_key(settings.namespace, user))
        members = cast(list[set[bytes]], pipe.execute()) if users else []
    finally:
        client.close()
    return {
        user: sorted(m.decode() for m in items)
        for user, items in zip(users, members, strict=True)
        if items
    }


def namespace_outputs(
    settings: Settings, users: Sequence[str], items: Sequence[str], *, offline_logs: bool = True
) -> dict[str, Any]:
    """Every output of a namespace (the module docstring lists them), by name."""
    from features.store import FeastOnlineStore

    store = FeastOnlineStore(settings.redis, settings.deployment)
    try:
        outputs: dict[str, Any] = {
            "users": store.read_users(list(users)),
            "items": store.read_items(list(items)),
            "seen": stored_seen(settings, users),
            "transitions": stored_transitions(settings),
            "transition_totals": stored_transition_totals(settings),
            "posteriors": stored_posteriors(settings),
        }
    finally:
        store.close()
    if offline_logs:
        from features.offline import OfflineEventLog
        from features.offline_impressions import OfflineImpressionLog

        log = OfflineEventLog(settings.deployment).read()
        slates = OfflineImpressionLog(settings.deployment).read()
        outputs["offline_log"] = sorted(
            zip(log["event_id"], log["event_type"], log["event_time_ms"], strict=True)
        )
        outputs["offline_impressions"] = sorted(
            zip(slates["request_id"], slates["event_time_ms"], slates["items"], strict=True)
        )
    return outputs


def differing_outputs(expected: dict[str, Any], got: dict[str, Any]) -> list[str]:
    """The names of the outputs that differ (transition weights and totals within
    ``TRANSITION_REL_TOL``; the neighbours of a capped anchor are left out, see
    :func:`capped_anchors`)."""
    capped = capped_anchors(expected.get("transitions") or {}) | capped_anchors(
        got.get("transitions") or {}
    )
    differ = []
    for name in sorted(expected.keys() | got.keys()):
        want, have = expected.get(name), got.get(name)
        if name == "transitions" and want is not None and have is not None:
            same = _close(_uncapped(want, capped), _uncapped(have, capped))
        elif name == "transition_totals" and want is not None and have is not None:
            same = _close(want, have)
        else:
            same = want == have
        if not same:
            differ.append(name)
    return differ


def capped_anchors(transitions: dict[tuple[str, str], float]) -> set[str]:
    """Anchors holding the most neighbours the store keeps (``DEFAULT_MAX_NEIGHBOURS``).

    The store trims such an anchor to its top neighbours after every write, so which of the
    neighbours near the cut survive, and with what weight once they come back, depends on the
    order of the increments: two runs that cut the stream into other batches may keep other
    tails (``features.transition_store``). Their totals count every increment and are compared;
    their neighbours are not. An anchor below the cap in both runs is compared weight by weight
    (one trimmed once and taken back below the cap by retractions since could differ there; the
    totals would still agree).
    """
    from features.transition_store import DEFAULT_MAX_NEIGHBOURS

    counts: dict[str, int] = {}
    for anchor, _ in transitions:
        counts[anchor] = counts.get(anchor, 0) + 1
    return {anchor for anchor, n in counts.items() if n >= DEFAULT_MAX_NEIGHBOURS}


def _uncapped(
    transitions: dict[tuple[str, str], float], capped: set[str]
) -> dict[tuple[str, str], float]:
    return {pair: w for pair, w in transitions.items() if pair[0] not in capped}


def _close(want: dict[Any, float], have: dict[Any, float]) -> bool:
    """Equal keys, and weights within ``TRANSITION_REL_TOL``."""
    return want.keys() == have.keys() and all(
        math.isclose(want[k], have[k], rel_tol=TRANSITION_REL_TOL) for k in want
    )
