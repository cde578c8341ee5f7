"""Which candidates a user has already interacted with: serving never recommends them again.

The worker keeps every item of a user's applied events in a Redis set
(``streams.statestore.seen_items_key``, written in the transaction that commits the user's
state); the online row's ``recent_items`` holds only the latest ``sequence_length``, so without
the set a heavy user is offered again what they rated long ago. The retriever asks once per
request about every source's candidates, before they are merged (``RetrievalRequest.seen_among``,
which ``RecommendationPipeline`` wires to this), and once per fallback round. A Redis error is
the pipeline's to flag: the slate is then served with the row's exclusions alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import redis

from core.errors import DependencyUnavailable
from features.redis_client import RedisClient
from streams.statestore import seen_items_key


class SeenItems(Protocol):
    def seen_among(self, user_id: str, item_ids: Sequence[str]) -> set[str]:
        """The members of ``item_ids`` the user has interacted with."""
        ...


class RedisSeenItems:
    def __init__(self, client: RedisClient, namespace: str) -> None:
        self._client, self._namespace = client, namespace

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
