"""The worker's state store port: what the stream steps load, and one atomic commit per batch.

Every stateful step (``streams.steps``, ``streams.bandit_steps``) reads the states a batch touches
through a :class:`StateStore` and returns, with its effects, one :class:`StateCommit`: everything
the batch changes, which the store must persist **atomically** (all or nothing). The runtime
applies the batch's other effects first and commits last, so a crash anywhere leaves either the
state before or after the batch (``streams.agents``).

Implementations: ``streams.statestore.RedisStateStore`` (one ``MULTI``/``EXEC``, production) and
:class:`InMemoryStateStore` (dicts; the harness ``streams.testing`` and unit tests). The
integration test ``tests/integration/streams/test_step_parity.py`` feeds the same batches through
both and compares every state and effect.

Adding a new kind of state is adding a field to ``StateCommit`` and a ``load_*`` method.

**Exactly-once input** (issue 21): every stateful step commits, in the same transaction as its
state, the next offset it has to consume of each source (topic, partition) it read, under its own
consumer name (``CONSUMERS``: one per step, since the ``interactions`` agent runs three steps over
one batch and each commits on its own). Its driver loads those offsets first (the steps of one
batch in one read, ``StateStore.reading_offsets_ahead``) and drops every record below them
(:func:`unconsumed`), so a batch that Kafka delivers again after a crash — its
offsets were committed to Redis but not yet to Kafka — is not applied twice, however long ago
the event ids it carries were forgotten. Outputs that another agent consumes (item updates,
bandit outcomes) carry their source record's identity onward; see ``streams.item_features``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from bandits.attribution import AttributionDelta, Input, apply_delta, snapshot_watermarks
from bandits.posterior import PosteriorState
from features.transition_store import InMemoryTransitionStore
from monitoring import Saved
from streams.item_features import ItemState
from streams.privacy import PrivacyStatus
from streams.user_features import UserState


class _Positioned(Protocol):
    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...


R = TypeVar("R", bound=_Positioned)

# ``bandits.attribution.AttributionState.to_dict()`` of one source partition: the step rebuilds
# the state with its config (``from_dict``), so the store hands out the plain, JSON-able
# snapshot; it is written as deltas (``AttributionDelta``), each batch's changes only.
AttributionSnapshot = dict[str, Any]
# (posterior hash key parts after the namespace, field) -> absolute value (``PosteriorWrite``)
PosteriorWrites = dict[tuple[tuple[str, ...], str], str]
# (topic, partition) -> the next offset to consume (last applied + 1)
Offsets = dict[tuple[str, int], int]
# key (``u:<user>``, ``i:<item>``) -> the earliest event time a drift monitor admitted for it
FirstSeen = dict[str, int]

# The consumer name of each stateful step (a field of the offsets' key in the store).
CONSUMERS = (
    "interactions",
    "impressions",
    "catalog",
    "item_features",
    "attribution",
    "posteriors",
    "drift",
    "drift_outcomes",
)


def unconsumed(records: Sequence[R], consumed: Offsets) -> list[R]:
    """The records at or above the next offset to consume of their (topic, partition)."""
    return [r for r in records if r.offset >= consumed.get((r.topic, r.partition), 0)]


def next_offsets(records: Iterable[_Positioned]) -> Offsets:
    """(topic, partition) -> highest offset in ``records`` + 1: what to commit after them."""
    marks: Offsets = {}
    for r in records:
        tp = (r.topic, r.partition)
        if r.offset >= marks.get(tp, 0):
            marks[tp] = r.offset + 1
    return marks


@dataclass(slots=True)
class InteractionState:
    """What the interactions step reads: privacy markers and states of the batch's users, and
    the watermarks of the batch's source partitions (``None``: nothing seen there yet)."""

    privacy: dict[str, PrivacyStatus] = field(default_factory=dict)
    users: dict[str, UserState] = field(default_factory=dict)
    watermarks: dict[int, int | None] = field(default_factory=dict)


@dataclass(slots=True)
class ImpressionState:
    """What the impressions step reads: the watermarks of the batch's source partitions and,
    per partition, which of the batch's slates (request ids) it applied before."""

    watermarks: dict[int, int | None] = field(default_factory=dict)
    applied: dict[int, set[str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SlateMemory:
    """One impressions partition's de-duplication memory, changed by a batch: the request ids
    of the slates it applied with their event times, and the event time below which ids are
    forgotten (``Lateness.dedup_cutoff`` of the partition's watermark; an older copy is late)."""

    applied: dict[str, int] = field(default_factory=dict)
    forget_before: int | None = None


@dataclass(frozen=True, slots=True)
class AttributionHead:
    """The small part of a stored attribution state: which version it is (the last delta's
    ``version``; None for a snapshot written before deltas) and its input watermarks."""

    version: str | None
    watermarks: dict[Input, int]


@dataclass(frozen=True, slots=True)
class DriftLoad:
    """What the drift step reads per batch: its monitors' stored cores and, per monitor, the
    first-seen times of the batch's users and items (``streams.drift_steps``) that are stored."""

    cores: dict[str, bytes] = field(default_factory=dict)
    first_seen: dict[str, FirstSeen] = field(default_factory=dict)


@dataclass(slots=True)
class StateCommit:
    """Everything one batch changes, persisted in one atomic write.

    ``forget_users`` are removed *before* ``users`` are written (a user deleted in this batch
    whose later events start a fresh state), their seen sets with them; ``transitions`` are
    increments, added; ``seen`` is added to each user's seen set.
    """

    watermarks: dict[str, dict[int, int | None]] = field(default_factory=dict)  # topic -> p -> wm
    users: dict[str, UserState] = field(default_factory=dict)
    forget_users: set[str] = field(default_factory=set)
    items: dict[str, ItemState] = field(default_factory=dict)
    privacy: dict[str, PrivacyStatus] = field(default_factory=dict)
    transitions: Mapping[tuple[str, str], float] = field(default_factory=dict)
    attribution: dict[int, AttributionDelta] = field(default_factory=dict)  # source partition
    posteriors: dict[str, PosteriorState] = field(default_factory=dict)  # item id
    posterior_writes: PosteriorWrites = field(default_factory=dict)
    offsets: dict[str, Offsets] = field(default_factory=dict)  # consumer -> consumed input
    drift: dict[str, Saved] = field(default_factory=dict)  # monitor name -> its save
    first_seen: dict[str, FirstSeen] = field(default_factory=dict)  # monitor -> lowered keys
    # user -> items of the batch's applied events, added to the user's seen set (serving never
    # recommends them again); a set union, so re-delivery and order change nothing
    seen: dict[str, set[str]] = field(default_factory=dict)
    # outbox -> entries appended to it (``streams.sinks``: the batch's offline rows)
    offline: dict[str, list[bytes]] = field(default_factory=dict)
    # impressions partition -> its slate memory's changes (``streams.steps.impressions_step``)
    slates: dict[int, SlateMemory] = field(default_factory=dict)

    def is_empty(self) -> bool:
        return not (
            any(marks for marks in self.watermarks.values())
            or self.users
            or self.forget_users
            or self.items
            or self.privacy
            or self.transitions
            or self.attribution
            or self.posteriors
            or self.posterior_writes
            or any(self.offsets.values())
            or self.drift
            or any(self.first_seen.values())
            or any(self.seen.values())
            or any(self.offline.values())
            or any(m.applied or m.forget_before is not None for m in self.slates.values())
        )


class StateStore(Protocol):
    """The keyed state of the stream worker (user, item, privacy, attribution, posteriors),
    partition watermarks and the outputs that must be exactly-once with them (transitions,
    posterior hashes). Loads omit keys that hold nothing."""

    def load_interactions(
        self, user_ids: Iterable[str], topic: str, partitions: Iterable[int]
    ) -> InteractionState: ...

    def load_privacy(self, user_ids: Iterable[str]) -> dict[str, PrivacyStatus]: ...

    def load_users(self, user_ids: Iterable[str]) -> dict[str, UserState]: ...

    def load_watermarks(self, topic: str, partitions: Iterable[int]) -> dict[int, int | None]: ...

    def load_impressions(
        self, topic: str, partitions: Iterable[int], requests: Mapping[int, Iterable[str]]
    ) -> ImpressionState:
        """The watermarks of ``partitions`` of ``topic`` (the impressions topic) and, of each
        partition's ``requests``, those in its slate memory (``StateCommit.slates``)."""
        ...

    def load_items(self, item_ids: Iterable[str]) -> dict[str, ItemState]: ...

    def load_attribution(self, partitions: Iterable[int]) -> dict[int, AttributionSnapshot]: ...

    def load_attribution_heads(self, partitions: Iterable[int]) -> dict[int, AttributionHead]:
        """Versions and watermarks of the stored attribution states, without the states."""
        ...

    def load_posteriors(self, item_ids: Iterable[str]) -> dict[str, PosteriorState]: ...

    def load_offsets(self, consumer: str, partitions: Iterable[tuple[str, int]]) -> Offsets: ...

    def reading_offsets_ahead(
        self, consumers: Sequence[str], partitions: Iterable[tuple[str, int]]
    ) -> AbstractContextManager[None]:
        """Within the block, ``load_offsets`` of ``consumers`` for ``partitions`` may answer from
        one read made on entry, kept current by this store's commits (the steps of one batch)."""
        ...

    def load_drift(
        self, monitors: Iterable[str], first_seen: Mapping[str, Iterable[str]] | None = None
    ) -> DriftLoad:
        """The monitors' stored cores (``monitoring.save``) and, for each monitor in
        ``first_seen``, the first-seen times of those keys (one round trip)."""
        ...

    def load_drift_chunks(self, monitor: str) -> dict[str, bytes]:
        """A monitor's stored chunks, by field (``monitoring.save``)."""
        ...

    def load_seen(self, user_id: str) -> set[str]:
        """The user's seen set (``StateCommit.seen``); empty when they have none."""
        ...

    def load_offline(self, outbox: str, count: int) -> list[tuple[str, bytes]]:
        """The oldest ``count`` entries of an outbox (``StateCommit.offline``), with their ids,
        in the order they were committed."""
        ...

    def drop_offline(self, outbox: str, entry_ids: Sequence[str]) -> None:
        """Remove entries (those that are not there any more are ignored)."""
        ...

    def commit(self, changes: StateCommit) -> None: ...

    def close(self) -> None: ...


def unconsumed_records(
    store: StateStore, consumer: str, records: Sequence[R]
) -> tuple[list[R], Offsets]:
    """The records ``consumer`` has not committed yet, and the offsets to commit after them.

    A batch that Kafka delivers again after a crash (its state was committed, its Kafka offsets
    were not) comes back empty here, so nothing is applied, forwarded or logged twice.
    """
    done = store.load_offsets(consumer, {(r.topic, r.partition) for r in records})
    fresh = unconsumed(records, done) if done else list(records)
    return fresh, next_offsets(fresh)


class InMemoryStateStore:
    """The port over dicts.

    Loads hand out the stored objects themselves (no copy, no codec) and the steps update what
    they load in place, so a batch that fails before ``commit`` has still changed this store. The
    harness never stops half-way, so that does not matter there; crash behaviour is tested
    against Redis (``tests/integration/streams``), whose codecs the parity test covers.
    """

    def __init__(self) -> None:
        self.users: dict[str, UserState] = {}
        self.items: dict[str, ItemState] = {}
        self.privacy: dict[str, PrivacyStatus] = {}
        self.watermarks: dict[str, dict[int, int | None]] = {}
        self.attribution: dict[int, AttributionSnapshot] = {}
        self.attribution_versions: dict[int, str] = {}
        self.posteriors: dict[str, PosteriorState] = {}
        self.posterior_hashes: dict[tuple[str, ...], dict[str, str]] = {}
        self.transitions = InMemoryTransitionStore()
        self.offsets: dict[str, Offsets] = {}
        self.drift: dict[str, bytes] = {}  # monitor -> core
        self.drift_chunks: dict[str, dict[str, bytes]] = {}  # monitor -> field -> chunk
        self.first_seen: dict[str, FirstSeen] = {}
        self.seen: dict[str, set[str]] = {}
        self.offline: dict[str, dict[str, bytes]] = {}  # outbox -> entry id -> entry
        self.slates: dict[int, dict[str, int]] = {}  # partition -> request id -> event time
        self._entries = 0
        self.commits = 0

    def load_interactions(
        self, user_ids: Iterable[str], topic: str, partitions: Iterable[int]
    ) -> InteractionState:
        ids = set(user_ids)
        return InteractionState(
            self.load_privacy(ids), self.load_users(ids), self.load_watermarks(topic, partitions)
        )

    def load_privacy(self, user_ids: Iterable[str]) -> dict[str, PrivacyStatus]:
        return _present(self.privacy, user_ids)

    def load_users(self, user_ids: Iterable[str]) -> dict[str, UserState]:
        return _present(self.users, user_ids)

    def load_watermarks(self, topic: str, partitions: Iterable[int]) -> dict[int, int | None]:
        marks = self.watermarks.get(topic, {})
        return {p: marks.get(p) for p in sorted(set(partitions))}

    def load_impressions(
        self, topic: str, partitions: Iterable[int], requests: Mapping[int, Iterable[str]]
    ) -> ImpressionState:
        applied = {
            p: {r for r in ids if r in self.slates.get(p, {})} for p, ids in requests.items()
        }
        return ImpressionState(self.load_watermarks(topic, partitions), applied)

    def load_items(self, item_ids: Iterable[str]) -> dict[str, ItemState]:
        return _present(self.items, item_ids)

    def load_attribution(self, partitions: Iterable[int]) -> dict[int, AttributionSnapshot]:
        return _present(self.attribution, partitions)

    def load_attribution_heads(self, partitions: Iterable[int]) -> dict[int, AttributionHead]:
        return {
            p: AttributionHead(self.attribution_versions.get(p), snapshot_watermarks(data))
            for p, data in _present(self.attribution, partitions).items()
        }

    def load_posteriors(self, item_ids: Iterable[str]) -> dict[str, PosteriorState]:
        return _present(self.posteriors, item_ids)

    def load_offsets(self, consumer: str, partitions: Iterable[tuple[str, int]]) -> Offsets:
        return _present(self.offsets.get(consumer, {}), partitions)

    def reading_offsets_ahead(
        self, consumers: Sequence[str], partitions: Iterable[tuple[str, int]]
    ) -> AbstractContextManager[None]:
        return contextlib.nullcontext()  # loads cost nothing here

    def load_drift(
        self, monitors: Iterable[str], first_seen: Mapping[str, Iterable[str]] | None = None
    ) -> DriftLoad:
        return DriftLoad(
            _present(self.drift, monitors),
            {
                m: _present(self.first_seen.get(m, {}), keys)
                for m, keys in (first_seen or {}).items()
            },
        )

    def load_drift_chunks(self, monitor: str) -> dict[str, bytes]:
        return dict(self.drift_chunks.get(monitor, {}))

    def load_seen(self, user_id: str) -> set[str]:
        return set(self.seen.get(user_id, ()))

    def load_offline(self, outbox: str, count: int) -> list[tuple[str, bytes]]:
        return list(self.offline.get(outbox, {}).items())[:count]

    def drop_offline(self, outbox: str, entry_ids: Sequence[str]) -> None:
        entries = self.offline.get(outbox, {})
        for entry_id in entry_ids:
            entries.pop(entry_id, None)

    def commit(self, changes: StateCommit) -> None:
        for outbox, added in changes.offline.items():
            for entry in added:
                self._entries += 1
                self.offline.setdefault(outbox, {})[f"{self._entries:020d}"] = entry
        for consumer, offsets in changes.offsets.items():
            self.offsets.setdefault(consumer, {}).update(offsets)
        for user_id in changes.forget_users:
            self.users.pop(user_id, None)
            self.seen.pop(user_id, None)
        self.users.update(changes.users)
        for user_id, items in changes.seen.items():
            if items:
                self.seen.setdefault(user_id, set()).update(items)
        self.items.update(changes.items)
        self.privacy.update(changes.privacy)
        for topic, marks in changes.watermarks.items():
            stored = self.watermarks.setdefault(topic, {})
            stored.update({p: wm for p, wm in marks.items() if wm is not None})
        self.transitions.apply(changes.transitions)
        for partition, delta in changes.attribution.items():
            self.attribution[partition] = apply_delta(self.attribution.get(partition), delta)
            self.attribution_versions[partition] = delta.version
        self.posteriors.update(changes.posteriors)
        for (parts, name), value in changes.posterior_writes.items():
            self.posterior_hashes.setdefault(parts, {})[name] = value
        for monitor, saved in changes.drift.items():
            self.drift[monitor] = saved.core
            chunks = self.drift_chunks.setdefault(monitor, {})
            if saved.replace:
                chunks.clear()
            for name in saved.dropped:
                chunks.pop(name, None)
            chunks.update(saved.chunks)
        for monitor, seen in changes.first_seen.items():
            self.first_seen.setdefault(monitor, {}).update(seen)
        for partition, memory in changes.slates.items():
            slates = self.slates.setdefault(partition, {})
            slates.update(memory.applied)
            if memory.forget_before is not None:
                cutoff = memory.forget_before
                self.slates[partition] = {r: t for r, t in slates.items() if t >= cutoff}
        self.commits += 1

    def close(self) -> None:
        return None


def _present(stored: Mapping[Any, Any], keys: Iterable[Any]) -> dict[Any, Any]:
    return {k: stored[k] for k in sorted(set(keys)) if k in stored}
