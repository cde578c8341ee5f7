"""The bandit's two stream steps, pure: attribution by user partition, posteriors by item.

=====================  ==========================================  ===========================
step                   batch                                       state (through the port)
=====================  ==========================================  ===========================
``attribution_step``   ``<ns>.impressions`` + ``<ns>.events`` +    ``AttributionState`` per
                       ``<ns>.privacy`` (keyed by user)            source partition number, and
                                                                   the users' privacy markers
``outcomes_step``      ``<ns>.bandit-outcomes`` (by item)          ``PosteriorState`` per item
=====================  ==========================================  ===========================

Both wrap the pure functions of ``bandits`` (``bandits/__init__.py`` draws the pipeline) and
return the state commit with their effects; :class:`BanditSteps` is the driver (decode → load
through ``streams.state_port.StateStore`` → step) that the runtime (``streams.bandit_agent``) and
the harness (``streams.testing``) share.

Attribution feeds every impression and interaction of partition *p* (Faust assigns partition *p*
of all user-keyed topics to one worker) through ``bandits.attribution.attribute`` in event time;
it de-duplicates impressions by ``request_id`` and rewards by ``event_id``. Undecodable records
are skipped here: the feature and impression steps of the same batch send them to the
dead-letter topic. Future events are skipped likewise (those steps route them). Posteriors are
idempotent on ``outcome_id`` and order-insensitive (``bandits.discounted``).

Watermarks per input (issue 21). The two input topics, ``<ns>.impressions`` and
``<ns>.events``, are read in no set order, so partition *p*'s state keeps one watermark per
input (``bandits.attribution.Input``), not one for both: each record is judged late against its
own topic's watermark, a slot's window is decided by the events watermark (only rewards can
change it) and buffered rewards are dropped by the impressions watermark (only impressions can
claim them). The outcome is then the same however the two topics' records interleave, within
the allowed lateness (``tests/unit/streams/test_bandit_interleaving.py``). The watermarks live in
the partition's state (``S:bandit:attribution:<p>:state``), so they are committed with the state
and the consumed offsets in the batch's one transaction, in the namespace's hash slot, as
before.

Cost per batch (issue 21, item 5). A partition's state holds every de-dup id and buffered
reward within the lateness, and every pending slot within the window: far more than a batch
touches. So a batch writes only what it changed (``AttributionState.delta``), and a worker keeps
the states it committed (:class:`LiveAttribution`) and reads only their versions
(``StateStore.load_attribution_heads``) to know they are still current; a state is read whole
and rebuilt only when another writer changed it, and then written whole once.

Privacy (``streams.privacy``): impressions and rewards of users that the privacy markers suppress
are not attributed; a ``delete`` request removes the user's pending impressions and buffered
rewards (the only user ids this step holds) from the partition's state. The interactions step of
the same batch may not have stored the batch's delete markers yet, so they suppress here as the
markers will (events up to the deletion time). The posteriors are per-item aggregates and hold no
user data.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from bandits.attribution import (
    AttributionConfig,
    AttributionState,
    Input,
    WatermarkTick,
    attribute,
)
from bandits.posterior import Outcome, PosteriorConfig, PosteriorState, apply_outcome, prune_seen
from core.errors import SchemaError
from events import decode
from events.models import Impression, Interaction, PrivacyAction, PrivacyRequest
from streams.codec import json_arrays
from streams.eventtime import Lateness, Verdict, judge
from streams.fast_decode import decode_interaction
from streams.handlers import Forward, Position, SourceRecord
from streams.partitioning import ITEM_ID, by_partition
from streams.privacy import PrivacyStatus, suppresses
from streams.state_port import (
    AttributionHead,
    AttributionSnapshot,
    PosteriorWrites,
    StateCommit,
    StateStore,
    unconsumed_records,
)
from streams.topics import TopicNames

UserEvent = Impression | Interaction
InputPartition = tuple[Input, int]  # one input topic's source partition


@dataclass(frozen=True, slots=True)
class BanditConfig:
    topics: TopicNames
    attribution: AttributionConfig = field(default_factory=AttributionConfig)
    posterior: PosteriorConfig = field(default_factory=PosteriorConfig)
    policy: Lateness = field(default_factory=Lateness)
    max_event_bytes: int = 64 * 1024
    partitions: int = 1  # of ``<ns>.bandit-outcomes`` (``settings.kafka.partitions``)

    @property
    def seen_margin_ms(self) -> int:
        """How far behind an item's newest outcome an outcome id can still come back: the
        attribution window plus lateness, plus the same margin for skew between source
        partitions that the item state uses (``streams.eventtime``)."""
        policy = self.policy
        return self.attribution.window_ms + policy.allowed_lateness_ms + policy.dedup_horizon_ms

    def input_of(self, topic: str) -> Input | None:
        """The attribution input a topic feeds (``None``: privacy, which moves no watermark)."""
        if topic == self.topics.impressions:
            return Input.IMPRESSIONS
        if topic == self.topics.events:
            return Input.EVENTS
        return None


def encode_outcome(outcome: Outcome) -> bytes:
    """The outcome's fields as a JSON object (orjson writes a dataclass as ``asdict`` would,
    without building the dict)."""
    return orjson.dumps(outcome)


def outcome_messages(outcomes: Sequence[Outcome], partitions: int) -> list[Forward]:
    """Outcomes as ``<ns>.bandit-outcomes`` messages: one JSON array per partition of their
    items (murmur2 of the item id, as a keyed produce would pick; a few arrays for a very large
    group), each item's outcomes in their order. The posteriors fold them exactly as one record
    per outcome; the posteriors agent just consumes a few records per batch instead of one per
    outcome (a slate of k items decides k outcomes)."""
    return [
        Forward(partition, payload)
        for partition, group in by_partition(outcomes, ITEM_ID, partitions)
        for payload in json_arrays(encode_outcome(o) for o in group)
    ]


def decode_outcome_record(raw: bytes) -> list[Outcome]:
    """A ``<ns>.bandit-outcomes`` record: a JSON array of outcomes (``outcome_messages``) or, as
    written before outcomes were grouped, one outcome object."""
    try:
        body = orjson.loads(raw)
        if isinstance(body, dict):
            return [Outcome(**body)]
        if not isinstance(body, list) or not body:
            raise ValueError("neither an outcome nor a non-empty array of outcomes")
        return [Outcome(**one) for one in body]
    except (ValueError, TypeError) as exc:
        raise SchemaError(f"bad bandit outcome: {exc}", reason="invalid_outcome") from None


def forget_users(data: AttributionSnapshot, user_ids: set[str]) -> AttributionSnapshot:
    """An ``AttributionState.to_dict()`` without the pending impressions and buffered rewards
    of ``user_ids`` (privacy deletion; the seen-ids hold request and event ids only)."""
    return {
        **data,
        "pending": [p for p in data["pending"] if p["user_id"] not in user_ids],
        "rewards": {k: r for k, r in data["rewards"].items() if r["user_id"] not in user_ids},
    }


# -- attribution ---------------------------------------------------------------------------------
@dataclass(slots=True)
class AttributionBatch:
    events: list[tuple[int, UserEvent]] = field(default_factory=list)  # (partition, event)
    # partition -> user deleted in this batch -> greatest deletion time
    deletions: dict[int, dict[str, int]] = field(default_factory=dict)

    def user_ids(self) -> set[str]:
        return {event.user_id for _, event in self.events}

    def partitions(self) -> set[int]:
        return {p for p, _ in self.events} | set(self.deletions)


@dataclass(slots=True)
class AttributionInput:
    privacy: dict[str, PrivacyStatus] = field(default_factory=dict)
    snapshots: dict[int, AttributionSnapshot] = field(default_factory=dict)  # absent: fresh
    # States still current (``LiveAttribution.take``), used instead of their snapshots.
    kept: dict[int, AttributionState] = field(default_factory=dict)


@dataclass(slots=True)
class AttributionEffects:
    # Numbered (``AttributionState.stamp``) and held in the commit's outbox: produced, keyed by
    # item, once the commit is stored.
    outcomes: list[Outcome] = field(default_factory=list)
    # The stored outboxes of the states this batch rebuilt from the store (a restart, another
    # writer, a failed batch): maybe never produced, so produced (again) before the commit.
    reemit: list[Outcome] = field(default_factory=list)
    late: int = 0
    commit: StateCommit = field(default_factory=StateCommit)
    # The state behind each ``commit.attribution`` delta, for ``LiveAttribution.committed``.
    states: dict[int, AttributionState] = field(default_factory=dict)


class LiveAttribution:
    """The attribution states a worker committed last, kept between batches.

    Without it a batch touching a partition reads the partition's whole state and rebuilds it
    (``AttributionState.from_dict``): every de-dup id and buffered reward within the lateness,
    on every batch. A state held here is used instead while the stored state is still the
    version it was committed as (``take``, given the stored ``AttributionHead.version``): a
    write by another worker after a rebalance, or by this one in a batch that failed, stores
    another version, and the state is then read and rebuilt from the store. Versions name their
    writer (a random id per instance) and count its commits, so no two writers share one. A
    state is taken out while a batch works on it and put back only once its commit succeeded
    (``committed``), so a batch that fails leaves nothing half applied here.
    """

    def __init__(self) -> None:
        self._held: dict[int, tuple[str, AttributionState]] = {}
        self._writer = uuid.uuid4().hex[:16]
        self._commits = 0
        self.kept = self.rebuilt = 0  # states handed out, and refused (counted for metrics)

    def next_version(self) -> str:
        self._commits += 1
        return f"{self._writer}:{self._commits}"

    def take(self, partition: int, head: AttributionHead | None) -> AttributionState | None:
        """The state held for ``partition`` if it is the stored version (taken out: the caller
        changes it); ``None`` otherwise, and a stale one is dropped."""
        held = self._held.pop(partition, None)
        if held is not None and head is not None and held[0] == head.version:
            self.kept += 1
            return held[1]
        self.rebuilt += 1
        return None

    def committed(self, effects: AttributionEffects) -> None:
        """After ``effects.commit`` is stored: its states are the stored versions now."""
        for partition, state in effects.states.items():
            self._held[partition] = (effects.commit.attribution[partition].version, state)

    def __len__(self) -> int:
        return len(self._held)


def _version(live: LiveAttribution | None) -> str:
    return live.next_version() if live is not None else uuid.uuid4().hex


def decode_attribution(
    records: Sequence[SourceRecord],
    config: BanditConfig,
    decoded: Mapping[Position, object] | None = None,
) -> AttributionBatch:
    """``decoded``: events the other steps of the batch decoded already, by (topic, partition,
    offset) (``streams.handlers.decoded_by_position``); the rest are decoded here."""
    batch = AttributionBatch()
    known = decoded or {}
    for record in records:
        event = known.get((record.topic, record.partition, record.offset))
        if not isinstance(event, Impression | Interaction):
            event = _decode_source(record, config)
        if event is None:
            continue
        if isinstance(event, PrivacyRequest):
            if event.action is PrivacyAction.DELETE:
                deleted = batch.deletions.setdefault(record.partition, {})
                t = max(event.event_time_ms, deleted.get(event.user_id, event.event_time_ms))
                deleted[event.user_id] = t
            continue
        batch.events.append((record.partition, event))
    return batch


def _decode_source(record: SourceRecord, config: BanditConfig) -> UserEvent | PrivacyRequest | None:
    limit = config.max_event_bytes
    try:
        if record.topic == config.topics.impressions:
            return decode(record.value, Impression, max_bytes=limit)
        if record.topic == config.topics.privacy:
            return decode(record.value, PrivacyRequest, max_bytes=limit)
        return decode_interaction(record.value, max_bytes=limit)
    except SchemaError:
        return None  # dead-lettered by the step that owns the topic


def rebuilt_state(
    data: dict[str, Any], config: AttributionConfig, reemit: list[Outcome]
) -> AttributionState:
    """A partition's state rebuilt from the store; its stored outbox joins ``reemit``: the worker
    that committed it may have stopped before producing it (``AttributionEffects.reemit``)."""
    state = AttributionState.from_dict(data, config)
    reemit.extend(state.outbox)
    return state


def attribution_step(
    state: AttributionInput,
    batch: AttributionBatch,
    config: BanditConfig,
    now_ms: int | None,
    live: LiveAttribution | None = None,
) -> tuple[AttributionInput, AttributionEffects]:
    """``state.kept``: states still current, used in place of rebuilding them from their
    snapshots; ``live`` names the versions the commit writes."""
    by_partition: dict[int, list[UserEvent]] = {}
    for partition, event in batch.events:
        if judge(None, event.event_time_ms, config.policy, now_ms) is Verdict.FUTURE:
            continue
        by_partition.setdefault(partition, []).append(event)
    for partition, events in by_partition.items():
        gone = batch.deletions.get(partition, {})
        by_partition[partition] = [
            e
            for e in events
            if e.event_time_ms > gone.get(e.user_id, e.event_time_ms - 1)
            and not suppresses(state.privacy.get(e.user_id), e.event_time_ms)
        ]
    effects = AttributionEffects()
    for partition in sorted(set(by_partition) | set(batch.deletions)):
        partition_state = state.kept.pop(partition, None)
        if partition_state is None:
            data = state.snapshots.get(partition) or AttributionState().to_dict()
            partition_state = rebuilt_state(data, config.attribution, effects.reemit)
        if partition in batch.deletions:  # rare: rebuilt without them, and written whole
            data = forget_users(partition_state.to_dict(), set(batch.deletions[partition]))
            partition_state = AttributionState.from_dict(data, config.attribution)
        decided: list[Outcome] = []
        for event in by_partition.get(partition, ()):
            partition_state, outputs = attribute(partition_state, event, config.attribution)
            for output in outputs:
                if isinstance(output, Outcome):
                    decided.append(output)
                elif output.reason == "late":
                    effects.late += 1
        effects.outcomes += partition_state.stamp(decided, partition)
        effects.commit.attribution[partition] = partition_state.delta(_version(live))
        effects.states[partition] = partition_state
    return state, effects


def idle_inputs_step(
    heads: Mapping[int, AttributionHead],
    idle: Sequence[InputPartition],
    active: Sequence[InputPartition],
    config: BanditConfig,
    state_of: Callable[[int], AttributionState],
    live: LiveAttribution | None = None,
) -> AttributionEffects:
    """The idleness rule (Flink's ``withIdleness``), per input topic: an idle input stops holding
    back its partition. Its watermark moves up to the smallest watermark of the partition's
    active inputs or, when the whole partition is idle, of all active inputs; what that passes is
    decided (windows, by the events watermark) or dropped (buffered rewards, by the impressions
    watermark).

    ``heads``: the stored states' watermarks (absent: nothing stored); ``state_of(partition)``:
    a stored state, asked for only where a watermark moves; ``live`` as in ``attribution_step``.

    An idle input is one (topic, partition) with no record for longer than
    ``AETHER_STREAM__IDLE_PARTITION_TIMEOUT_S`` (wall time, judged by the runtime); without the
    rule a partition whose events stop would hold its pending impressions forever, and one that
    never sees an impression would buffer its rewards forever. The cost: a record that then
    arrives on the idle input within the lateness of its old watermark but behind the new one is
    late (a reward for an impression already decided no longer counts; as in Flink, idleness
    trades completeness for progress).
    """
    effects = AttributionEffects()
    marks: dict[int, list[int]] = {}  # partition -> watermarks of its active inputs
    for source, partition in active:
        head = heads.get(partition)
        mark = head.watermarks.get(source) if head is not None else None
        if mark is not None:
            marks.setdefault(partition, []).append(mark)
    if not marks:
        return effects  # nothing moves while every input is idle
    everywhere = min(min(m) for m in marks.values())
    idle_by_partition: dict[int, list[Input]] = {}
    for source, partition in sorted(set(idle) - set(active)):
        idle_by_partition.setdefault(partition, []).append(source)
    for partition, sources in sorted(idle_by_partition.items()):
        head = heads.get(partition)
        if head is None:
            continue  # nothing seen on the partition: nothing waits
        target = min(marks[partition]) if partition in marks else everywhere
        current = head.watermarks
        behind = [s for s in sources if s not in current or current[s] < target]
        if not behind:
            continue
        state = state_of(partition)
        decided: list[Outcome] = []
        for source in behind:
            state, outputs = attribute(state, WatermarkTick(target, source), config.attribution)
            decided += [o for o in outputs if isinstance(o, Outcome)]
        effects.outcomes += state.stamp(decided, partition)
        effects.commit.attribution[partition] = state.delta(_version(live))
        effects.states[partition] = state
    return effects


# -- posteriors ----------------------------------------------------------------------------------
@dataclass(slots=True)
class OutcomeBatch:
    outcomes: list[Outcome] = field(default_factory=list)
    bad: int = 0  # undecodable records (counted; outcomes are internal, no dead-letter topic)

    def item_ids(self) -> set[str]:
        return {o.item_id for o in self.outcomes}


@dataclass(slots=True)
class PosteriorEffects:
    applied: int = 0
    duplicates: int = 0
    bad: int = 0
    commit: StateCommit = field(default_factory=StateCommit)


def decode_outcomes(records: Sequence[SourceRecord]) -> OutcomeBatch:
    batch = OutcomeBatch()
    for record in records:
        try:
            batch.outcomes += decode_outcome_record(record.value)
        except SchemaError:
            batch.bad += 1
    return batch


def outcomes_step(
    states: dict[str, PosteriorState], batch: OutcomeBatch, config: BanditConfig
) -> tuple[dict[str, PosteriorState], PosteriorEffects]:
    """Fold outcomes into per-item states; the commit holds the states and the posterior hash
    fields (absolute values, so writing them again is harmless)."""
    effects = PosteriorEffects(bad=batch.bad)
    if not batch.outcomes:
        return states, effects
    items = sorted(batch.item_ids())
    for item_id in items:
        states.setdefault(item_id, PosteriorState())
    writes: PosteriorWrites = {}  # latest absolute value per (hash, field)
    for outcome in batch.outcomes:
        state, out = apply_outcome(states[outcome.item_id], outcome, config.posterior)
        effects.applied += bool(out)
        for write in out:
            writes[(write.hash_parts, write.field)] = write.value
    for item_id in items:
        state = states[item_id]
        if state.seen:
            prune_seen(state, max(state.seen.values()) - config.seen_margin_ms)
    effects.duplicates = len(batch.outcomes) - effects.applied
    effects.commit = StateCommit(posteriors={i: states[i] for i in items}, posterior_writes=writes)
    return states, effects


# -- the driver both the runtime and the harness call --------------------------------------------
class BanditSteps:
    """Decode, load through the port, step; the caller applies the effects, then commits."""

    def __init__(self, config: BanditConfig) -> None:
        self.config = config

    def attribution(
        self,
        store: StateStore,
        records: Sequence[SourceRecord],
        now_ms: int | None,
        decoded: Mapping[Position, object] | None = None,
        live: LiveAttribution | None = None,
    ) -> AttributionEffects:
        """``live``: states kept from earlier batches, used where still current (the caller
        hands the effects to ``live.committed`` once their commit is stored)."""
        records, consumed = unconsumed_records(store, "attribution", records)
        batch = decode_attribution(records, self.config, decoded)
        if not batch.events and not batch.deletions:
            return AttributionEffects()
        partitions = batch.partitions()
        kept: dict[int, AttributionState] = {}
        if live is not None:
            heads = store.load_attribution_heads(partitions)
            for p in sorted(partitions):
                if (held := live.take(p, heads.get(p))) is not None:
                    kept[p] = held
        state = AttributionInput(
            privacy=store.load_privacy(batch.user_ids()),
            snapshots=store.load_attribution(partitions - kept.keys()),
            kept=kept,
        )
        _, effects = attribution_step(state, batch, self.config, now_ms, live)
        effects.commit.offsets["attribution"] = consumed
        return effects

    def advance_idle(
        self,
        store: StateStore,
        idle: Sequence[InputPartition],
        active: Sequence[InputPartition],
        live: LiveAttribution | None = None,
    ) -> AttributionEffects:
        """``idle_inputs_step`` over the stored attribution states (``live``: as ``attribution``)."""
        if not idle or not active:
            return AttributionEffects()
        heads = store.load_attribution_heads({p for _, p in [*idle, *active]})
        reemit: list[Outcome] = []

        def state_of(partition: int) -> AttributionState:
            held = live.take(partition, heads[partition]) if live is not None else None
            if held is not None:
                return held
            data = store.load_attribution([partition])[partition]
            return rebuilt_state(data, self.config.attribution, reemit)

        effects = idle_inputs_step(heads, idle, active, self.config, state_of, live)
        effects.reemit = reemit
        return effects

    def outcomes(self, store: StateStore, records: Sequence[SourceRecord]) -> PosteriorEffects:
        records, consumed = unconsumed_records(store, "posteriors", records)
        batch = decode_outcomes(records)
        states = store.load_posteriors(batch.item_ids()) if batch.outcomes else {}
        _, effects = outcomes_step(states, batch, self.config)
        effects.commit.offsets["posteriors"] = consumed
        return effects
