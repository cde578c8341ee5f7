"""Which candidates a user has already interacted with: serving never recommends them again.

The worker keeps every item of a user's applied events in a Redis set
(``streams.statestore.seen_items_key``, written in the transaction that commits the user's
state); the online row's ``recent_items`` holds only the latest ``sequence_length``, so without
the set a heavy user is offered again what they rated long ago. The retriever reads it once per
request, after the sources answered: the whole set when it holds at most ``WHOLE_SET_LIMIT``
items (``members_if_at_most``: one script, ``RetrievalRequest.seen_whole``; catalogue rows are
then masked without naming any candidate), else which of every source's candidates it holds
(``seen_among``, ``RetrievalRequest.seen_among``) and once more per fallback round.
``RecommendationPipeline`` wires both. A Redis error is the pipeline's to flag: the slate is then
served with the row's exclusions alone.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol, cast

import redis

from core.errors import DependencyUnavailable
from features.redis_client import RedisClient, registered_script
from streams.statestore import seen_items_key

# A seen set up to this size is read whole (a larger one: the candidates are asked about).
WHOLE_SET_LIMIT = 1_000

# KEYS[1] the seen set, ARGV[1] the limit: its members, or nil when it holds more.
MEMBERS_IF_AT_MOST = """
if redis.call('SCARD', KEYS[1]) > tonumber(ARGV[1]) then return false end
return redis.call('SMEMBERS', KEYS[1])
"""


class SeenItems(Protocol):
    def seen_among(self, user_id: str, item_ids: Sequence[str]) -> set[str]:
        """The members of ``item_ids`` the user has interacted with."""
        ...

    def members_if_at_most(self, user_id: str, limit: int) -> Collection[str] | None:
        """Every item the user has interacted with (ids as ``str``, or ``bytes`` from Redis),
        or None when that is more than ``limit`` items."""
        ...


class RedisSeenItems:
    def __init__(self, client: RedisClient, namespace: str) -> None:
        self._client, self._namespace = client, namespace
        self._members_if_at_most = registered_script(client, MEMBERS_IF_AT_MOST)

    def members_if_at_most(self, user_id: str, limit: int) -> Collection[str] | None:
        try:
            members = self._members_if_at_most(
                keys=[seen_items_key(self._namespace, user_id)], args=[limit]
            )
        except redis.RedisError as exc:
            raise DependencyUnavailable("redis", f"cannot read seen items: {exc}") from exc
        return None if members is None else cast(Collection[str], members)

    def seen_among(self, user_id: str, item_ids: Sequence[str]) -> set[str]:
        if not item_ids:
            return set()
        try:
            flags = self._client.smismember(seen_items_key(self._namespace, user_id), item_ids)
        except redis.RedisError as exc:
            raise DependencyUnavailable("redis", f"cannot read seen items: {exc}") from exc
        return {item for item, flag in zip(item_ids, flags, strict=True) if flag}


class InMemorySeenItems:
    """Seen sets in a dict; for unit tests of the pipeline."""

    def __init__(self, seen: dict[str, set[str]] | None = None) -> None:
        self.seen = seen or {}

    def seen_among(self, user_id: str, item_ids: Sequence[str]) -> set[str]:
        mine = self.seen.get(user_id, set())
        return {i for i in item_ids if i in mine}

    def members_if_at_most(self, user_id: str, limit: int) -> Collection[str] | None:
        mine = self.seen.get(user_id, set())
        return None if len(mine) > limit else sorted(mine)
