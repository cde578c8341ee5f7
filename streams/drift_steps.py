"""The worker's drift monitors: ``monitoring``'s pure step over the stream's own records.

One monitor instance per source (topic, partition) — so each has one watermark, its input's
largest event time (two topics read by one agent are not in event-time order with each other) —
each committing its state together with the source offsets it consumed, under its own consumer
name, in one transaction (``streams.state_port``):

* ``events:<p>`` and ``slates:<p>`` (consumer ``drift``), fed by the ``interactions`` agent:
  partition *p* of ``<ns>.events`` (input signals: event share and rate per type) with the
  pipeline samples of that partition (lag, freshness, dead-letter rate; taken by
  ``streams.drift_agent`` at most once a second), and partition *p* of ``<ns>.impressions``
  (exposure by popularity decile, Gini, coverage, cold-slot share, source mix, the ranker's top
  score);
* ``outcomes:<p>`` (consumer ``drift_outcomes``), fed by the ``bandit_posteriors`` agent with
  partition *p* of ``<ns>.bandit-outcomes``: CTR per arm and per source, dismiss rate per arm. An
  outcome is decided up to the attribution window after its impression, so this monitor's
  allowed lateness covers that window.

Why the monitors decode the raw records instead of reading another step's effects: a crash
between that step's commit and this one re-delivers the batch; the other step skips it by its
offsets, this one applies it by its own, so no observation is lost or counted twice. Inside the
monitor, windows close in event time and observations are de-duplicated by id
(``monitoring.monitor``), so detections are a function of the log, not of batching or restarts.

Cold items in a slate are the slots served by the sources that exist for new items (``fresh``,
``content``). Cold users and cold items in *events* are defined by event time: an event is from a
cold user if it lies within ``cold_user_ms`` (default one day) of that user's first admitted
event, on a cold item if within ``cold_item_ms`` (default seven days) of the item's first
admitted event, as this monitor saw them (an item's events are spread over every partition; each
``events:<p>`` monitor keeps its own first-seen times). The earliest admitted time per user and
item is kept in the store (read with the monitors' cores, ``StateStore.load_drift``; users under a
keyed 64-bit hash, not their id) and committed with the monitor's state. The flags do not depend
on arrival order: the batch's admitted events are classified in ``(event_time, id)`` order, and an
event that arrives after a later one and is still admitted lies within the allowed lateness plus
one window of it — shorter than either horizon (checked by :class:`DriftConfig`) — so whatever it
lowers a first-seen time to, the later event is cold either way. Property test:
``tests/unit/streams/test_drift_cold_shares.py``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.errors import ConfigError, SchemaError
from events import decode
from events.models import DriftDetection, Impression, Interaction
from monitoring import (
    Batch,
    EventSeen,
    MonitorConfig,
    MonitorState,
    PipelineSample,
    SlateServed,
    SlotOutcome,
    admits,
    estimates,
    event_from_interaction,
    load,
    new_state,
    save,
    slate_from_impression,
    step,
)
from monitoring.config import Signal
from streams.bandit_steps import decode_outcome_record
from streams.eventtime import Lateness, Verdict, judge
from streams.fast_decode import decode_interaction
from streams.handlers import SourceRecord
from streams.state_port import FirstSeen, StateCommit, StateStore, unconsumed_records
from streams.topics import TopicNames

COLD_SOURCES = frozenset({"fresh", "content"})  # candidate sources that serve new items
DAY_MS = 86_400_000

Estimates = dict[tuple[Signal, str], float]


@dataclass(frozen=True, slots=True)
class DriftConfig:
    topics: TopicNames
    policy: Lateness = field(default_factory=Lateness)
    user_monitor: MonitorConfig = field(default_factory=MonitorConfig)
    outcome_monitor: MonitorConfig = field(default_factory=MonitorConfig)
    max_event_bytes: int = 64 * 1024
    cold_user_ms: int = DAY_MS
    cold_item_ms: int = 7 * DAY_MS

    def __post_init__(self) -> None:
        reach = self.user_monitor.allowed_lateness_ms + self.user_monitor.window_ms
        if min(self.cold_user_ms, self.cold_item_ms) <= reach:
            raise ConfigError(
                f"cold_user_ms and cold_item_ms must exceed the monitor's allowed lateness plus "
                f"one window ({reach} ms), or the cold shares would depend on arrival order"
            )

    @classmethod
    def for_stream(
        cls,
        topics: TopicNames,
        policy: Lateness,
        attribution_window_ms: int,
        attribution_lateness_ms: int,
        max_event_bytes: int = 64 * 1024,
    ) -> DriftConfig:
        lateness = policy.allowed_lateness_ms
        return cls(
            topics=topics,
            policy=policy,
            user_monitor=MonitorConfig(allowed_lateness_ms=lateness),
            outcome_monitor=MonitorConfig(
                allowed_lateness_ms=attribution_window_ms + attribution_lateness_ms + lateness
            ),
            max_event_bytes=max_event_bytes,
        )


@dataclass(slots=True)
class DriftEffects:
    detections: list[DriftDetection] = field(default_factory=list)
    estimates: dict[str, Estimates] = field(default_factory=dict)  # monitor -> its estimates
    observations: int = 0
    late: int = 0  # observations whose window had closed
    commit: StateCommit = field(default_factory=StateCommit)


@dataclass(slots=True)
class _PartitionBatch:
    interactions: list[Interaction] = field(default_factory=list)  # classified at the step
    events: list[EventSeen] = field(default_factory=list)
    slates: list[SlateServed] = field(default_factory=list)
    outcomes: list[SlotOutcome] = field(default_factory=list)
    watermark_ms: int | None = None

    def saw(self, event_time_ms: int) -> None:
        if self.watermark_ms is None or event_time_ms > self.watermark_ms:
            self.watermark_ms = event_time_ms


class DriftSteps:
    """Decode → load the monitors' states → ``monitoring.step`` → one commit per call.

    States are kept decoded between batches: a stored state equal to the bytes this process
    committed last is not decoded again (any other writer, or a failed commit, makes them
    differ, and then the stored bytes win).
    """

    def __init__(self, config: DriftConfig) -> None:
        self.config = config
        self._decoded: dict[str, tuple[bytes, MonitorState]] = {}
        self._hash_key = config.topics.events.encode()[:64]

    def user_records(
        self,
        store: StateStore,
        records: Sequence[SourceRecord],
        now_ms: int | None,
        samples: Mapping[int, PipelineSample] | None = None,
        decoded: Mapping[tuple[str, int, int], Any] | None = None,
    ) -> DriftEffects:
        """Events and impressions (other topics of the batch are ignored) and pipeline samples.

        ``decoded``: events the other steps of the batch decoded already, by (topic, partition,
        offset); the rest are decoded here (after a crash the other steps skip records this one
        has not yet consumed).
        """
        records, consumed = unconsumed_records(store, "drift", records)
        batches: dict[str, _PartitionBatch] = {}  # by monitor
        topics = self.config.topics
        known = decoded or {}
        for record in records:
            event = known.get((record.topic, record.partition, record.offset))
            if record.topic == topics.events:
                self._add_event(batches, record, now_ms, event)
            elif record.topic == topics.impressions:
                self._add_slate(batches, record, now_ms, event)
        by_monitor = {f"events:{p}": sample for p, sample in (samples or {}).items()}
        for name in by_monitor:
            batches.setdefault(name, _PartitionBatch())
        effects = self._step(batches, by_monitor, store, self.config.user_monitor)
        effects.commit.offsets["drift"] = consumed
        return effects

    def outcome_records(self, store: StateStore, records: Sequence[SourceRecord]) -> DriftEffects:
        records, consumed = unconsumed_records(store, "drift_outcomes", records)
        batches: dict[str, _PartitionBatch] = {}  # by monitor
        for record in records:
            try:
                outcomes = decode_outcome_record(record.value)
            except SchemaError:
                continue  # counted as a dead letter by the posteriors step
            batch = batches.setdefault(f"outcomes:{record.partition}", _PartitionBatch())
            for outcome in outcomes:
                batch.outcomes.append(
                    SlotOutcome(
                        outcome.impression_ms,
                        outcome.outcome_id,
                        outcome.arm or "none",
                        outcome.source or "unknown",
                        outcome.success,
                        outcome.reason == "dismiss",
                    )
                )
                batch.saw(outcome.impression_ms)
        effects = self._step(batches, {}, store, self.config.outcome_monitor)
        effects.commit.offsets["drift_outcomes"] = consumed
        return effects

    # -- decoding --------------------------------------------------------------------------
    def _add_event(
        self,
        batches: dict[str, _PartitionBatch],
        record: SourceRecord,
        now_ms: int | None,
        event: Interaction | None,
    ) -> None:
        if event is None:
            try:
                event = decode_interaction(record.value, max_bytes=self.config.max_event_bytes)
            except SchemaError:
                return  # dead-lettered by the interactions step
        if judge(None, event.event_time_ms, self.config.policy, now_ms) is Verdict.FUTURE:
            return
        batch = batches.setdefault(f"events:{record.partition}", _PartitionBatch())
        batch.interactions.append(event)
        batch.saw(event.event_time_ms)

    def _add_slate(
        self,
        batches: dict[str, _PartitionBatch],
        record: SourceRecord,
        now_ms: int | None,
        slate: Impression | None,
    ) -> None:
        if slate is None:
            try:
                slate = decode(record.value, Impression, max_bytes=self.config.max_event_bytes)
            except SchemaError:
                return
        if judge(None, slate.event_time_ms, self.config.policy, now_ms) is Verdict.FUTURE:
            return
        cold = [item.item_id for item in slate.items if item.source in COLD_SOURCES]
        batch = batches.setdefault(f"slates:{record.partition}", _PartitionBatch())
        batch.slates.append(slate_from_impression(slate, cold_items=cold))
        batch.saw(slate.event_time_ms)

    # -- the monitors ----------------------------------------------------------------------
    def _step(
        self,
        batches: Mapping[str, _PartitionBatch],
        samples: Mapping[str, PipelineSample],
        store: StateStore,
        config: MonitorConfig,
    ) -> DriftEffects:
        effects = DriftEffects()
        if not batches:
            return effects
        # The hashed user field of every user in the batch, and the first-seen keys of every
        # event (admitted or not: which are is known only once the state is), read with the
        # monitors' cores in one round trip.
        users = {
            u: self._user_field(u)
            for u in {e.user_id for batch in batches.values() for e in batch.interactions}
        }
        keys = {
            name: {users[e.user_id] for e in batch.interactions}
            | {f"i:{e.item_id}" for e in batch.interactions}
            for name, batch in batches.items()
            if batch.interactions
        }
        stored = store.load_drift(batches, keys)
        for name in sorted(batches):
            batch = batches[name]
            state = self._state(store, name, stored.cores.get(name), config)
            if batch.interactions:
                first = stored.first_seen.get(name, {})
                batch.events = self._classified(
                    name, state, batch.interactions, users, first, effects
                )
            sample = samples.get(name)
            inputs = Batch(batch.events, batch.slates, batch.outcomes, (sample,) if sample else ())
            _, detections, late, _ = step(state, inputs, batch.watermark_ms, config)
            saved = save(state)
            self._decoded[name] = (saved.core, state)
            effects.commit.drift[name] = saved
            effects.detections.extend(detections)
            effects.late += late
            effects.observations += len(inputs)
            effects.estimates[name] = {(sig, seg): v for sig, seg, v in estimates(state)}
        return effects

    def _classified(
        self,
        monitor: str,
        state: MonitorState,
        interactions: Sequence[Interaction],
        users: Mapping[str, str],
        first: FirstSeen,
        effects: DriftEffects,
    ) -> list[EventSeen]:
        """The events with their cold-user and cold-item flags (module doc); the first-seen
        times they lower go into the commit. Events the monitor will reject as late are
        passed on unflagged (it only counts them) and lower nothing. ``users``: each user's
        field (``_user_field``); ``first``: the stored first-seen times of the batch's keys."""
        config = self.config.user_monitor
        admitted, late = [], []
        for event in interactions:
            (admitted if admits(state, event.event_time_ms, config) else late).append(event)
        admitted.sort(key=lambda e: (e.event_time_ms, e.event_id))
        lowered: FirstSeen = {}
        out = []
        for event in admitted:
            t = event.event_time_ms
            user_first = _lower(first, lowered, users[event.user_id], t)
            item_first = _lower(first, lowered, f"i:{event.item_id}", t)
            out.append(
                event_from_interaction(
                    event,
                    cold_user=t - user_first < self.config.cold_user_ms,
                    cold_item=t - item_first < self.config.cold_item_ms,
                )
            )
        if lowered:
            effects.commit.first_seen[monitor] = lowered
        out.extend(event_from_interaction(e) for e in late)
        return out

    def _user_field(self, user_id: str) -> str:
        """``u:`` + a 64-bit hash of the id (keyed by the topic): the store holds no user id, as
        the privacy markers do not (``streams.privacy``)."""
        digest = hashlib.blake2b(user_id.encode(), digest_size=8, key=self._hash_key)
        return f"u:{digest.hexdigest()}"

    def _state(
        self, store: StateStore, name: str, core: bytes | None, config: MonitorConfig
    ) -> MonitorState:
        if core is None:
            return new_state(config)
        cached = self._decoded.get(name)
        if cached is not None and cached[0] == core:
            return cached[1]
        try:
            return load(core, store.load_drift_chunks(name), config)
        except SchemaError:  # written by another river release: start over (module doc)
            return new_state(config)

    def forget(self, monitors: Iterable[str]) -> None:
        """Drop cached states (partitions this worker no longer owns)."""
        for name in monitors:
            self._decoded.pop(name, None)


def _lower(first: FirstSeen, lowered: FirstSeen, key: str, t: int) -> int:
    """``key``'s first-seen time after an admitted event at ``t`` (recorded when it drops)."""
    known = first.get(key)
    if known is None or t < known:
        first[key] = lowered[key] = t
        return t
    return known
