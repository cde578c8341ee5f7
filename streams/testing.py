"""An in-memory harness that runs the worker's steps with no broker (bytewax style).

``LocalPipeline`` calls the *same* drivers as the Faust runtime (``streams.steps.StreamSteps``
and, when ``attribution`` is given, ``streams.bandit_steps.BanditSteps``) over an
``InMemoryStateStore`` and an ``InMemoryFeatureStore``, and applies their effects as the runtime
does (``streams.agents``): privacy erasure, the offline log, rows, then the state commit. Item
updates and bandit outcomes that a batch forwards are fed back at once (``drain``). Tests,
replays and the benchmark's reference run use it to state what the real worker must produce;
``tests/integration/streams/test_step_parity.py`` checks that it does.

A batch holds either user-keyed records (``events``, ``privacy``, ``impressions``, as the
``interactions`` agent consumes them) or catalogue records (``items``), never both: those are
different agents in the worker.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import orjson

from bandits.attribution import AttributionConfig
from bandits.posterior import Outcome, PosteriorConfig
from events.models import Impression, Interaction
from features.ports import InMemoryFeatureStore
from features.rows import ItemFeatureRow, UserFeatureRow
from streams import item_features, user_features
from streams.bandit_steps import BanditConfig, BanditSteps, outcome_messages
from streams.eventtime import Lateness
from streams.handlers import DeadLetter, Effects, Forward, SourceRecord, decoded_by_position
from streams.item_features import ItemState
from streams.state_port import InMemoryStateStore
from streams.steps import StepConfig, StreamSteps, split_user_records
from streams.topics import TopicNames
from streams.transitions import merge_increments
from streams.user_features import UserFeatureConfig, UserState

# The worker's topic names without a namespace ("events", "item-updates", …): every field of
# ``TopicNames`` is its topic's base name with "_" for "-" (``test_local_topics_are_bare_names``).
LOCAL_TOPICS = TopicNames(
    **{f.name: f.name.replace("_", "-") for f in dataclasses.fields(TopicNames)}
)
EVENTS, IMPRESSIONS, ITEMS = LOCAL_TOPICS.events, LOCAL_TOPICS.impressions, LOCAL_TOPICS.items
ITEM_UPDATES, PRIVACY = LOCAL_TOPICS.item_updates, LOCAL_TOPICS.privacy


def interaction(event_id: str, user: str, item: str, event_type: str, t: int) -> dict[str, object]:
    """A valid events-topic payload as a dict (event time in epoch ms)."""
    return {
        "event_id": event_id,
        "event_type": event_type,
        "user_id": user,
        "item_id": item,
        "event_time": t,
    }


def privacy_request(event_id: str, user: str, action: str, t: int) -> dict[str, object]:
    """A valid privacy-topic payload (``opt_out``, ``opt_in`` or ``delete``)."""
    return {"event_id": event_id, "user_id": user, "action": action, "event_time": t}


def partition_of(key: str, partitions: int = 2) -> int:
    """A stand-in partitioner for tests: stable, and spreads a handful of keys."""
    return sum(key.encode()) % partitions


def record(
    body: dict[str, object] | bytes,
    *,
    topic: str = EVENTS,
    partition: int | None = None,
    offset: int = 0,
) -> SourceRecord:
    """A source record for ``body``, partitioned by its user (or item) id unless told."""
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    key = ""
    if isinstance(body, dict):
        key = str(body.get("user_id") or body.get("item_id") or "")
    if partition is None:
        partition = partition_of(key)
    return SourceRecord(topic, partition, offset, raw, key.encode() or None)


def merged(parts: Sequence[Effects]) -> Effects:
    """The effects of several steps of one batch, summed (each step commits its own state, so
    the sum carries no commit)."""
    if len(parts) == 1:
        return parts[0]
    total = Effects()
    for part in parts:
        total.user_rows += part.user_rows
        total.item_rows += part.item_rows
        total.forwards += part.forwards
        total.dead_letters += part.dead_letters
        total.late += part.late
        total.applied += part.applied
        total.duplicates += part.duplicates
        total.suppressed += part.suppressed
        total.applied_events += part.applied_events
        total.applied_impressions += part.applied_impressions
        total.transitions = merge_increments(total.transitions, part.transitions)
        if part.privacy.applied or part.privacy.duplicates or part.privacy.hide:
            total.privacy = part.privacy
    return total


@dataclass
class LocalPipeline:
    policy: Lateness = field(default_factory=Lateness)
    config: UserFeatureConfig = field(default_factory=UserFeatureConfig)
    max_event_bytes: int = 64 * 1024
    now_ms: int | None = None  # processing time for the future check; None = no check
    topics: TopicNames = LOCAL_TOPICS
    attribution: AttributionConfig | None = None  # None: no bandit steps
    posterior: PosteriorConfig = field(default_factory=PosteriorConfig)
    state: InMemoryStateStore = field(default_factory=InMemoryStateStore)
    store: InMemoryFeatureStore = field(default_factory=InMemoryFeatureStore)
    event_log: list[Interaction] = field(default_factory=list)  # the offline log's stand-in
    impression_log: list[Impression] = field(default_factory=list)  # the impression log's
    erased: list[str] = field(default_factory=list)  # users whose offline data was erased
    outcomes: list[Outcome] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    late: list[SourceRecord] = field(default_factory=list)
    applied: int = 0
    duplicates: int = 0
    suppressed: int = 0
    _pending_updates: list[Forward] = field(default_factory=list)
    _pending_outcomes: list[Outcome] = field(default_factory=list)
    _offsets: dict[tuple[str, int], int] = field(default_factory=dict)  # next offset to assign

    def __post_init__(self) -> None:
        step_config = StepConfig(self.topics, self.policy, self.config, self.max_event_bytes)
        self.steps = StreamSteps(step_config)
        self.bandit_steps: BanditSteps | None = None
        if self.attribution is not None:
            self.bandit_steps = BanditSteps(
                BanditConfig(
                    self.topics, self.attribution, self.posterior, self.policy, self.max_event_bytes
                )
            )

    # -- state, as the tests read it -----------------------------------------------------------
    @property
    def users(self) -> dict[str, UserState]:
        return self.state.users

    @property
    def items(self) -> dict[str, ItemState]:
        return self.state.items

    @property
    def watermarks(self) -> dict[str, dict[int, int | None]]:
        return self.state.watermarks

    # -- feeding -------------------------------------------------------------------------------
    def feed(self, records: Iterable[SourceRecord]) -> Effects:
        """Process one batch as the worker's agent for its topics does, then the item and
        posterior sides; returns the source steps' effects (summed)."""
        batch = [self._positioned(r) for r in records]
        if not batch:
            return Effects()
        topics = self.topics
        user_keyed = {topics.events, topics.privacy, topics.impressions}
        seen = {r.topic for r in batch}
        unknown = seen - user_keyed - {topics.items}
        if unknown:
            raise ValueError(f"unknown source topic(s) {sorted(unknown)}")
        if topics.items in seen and len(seen) > 1:
            raise ValueError("catalogue records and user-keyed records go to different agents")
        if seen == {topics.items}:
            effects = self._apply(self.steps.catalog(self.state, batch, self.now_ms))
        else:
            effects = self._on_users(batch)
        self.drain()
        return effects

    def _positioned(self, source: SourceRecord) -> SourceRecord:
        """The record at or after the next offset of its (topic, partition), as a broker appends
        it: the steps skip offsets they have committed, so tests' records (built at offset 0) are
        numbered here; increasing offsets a test gave are kept. Feeding a record again is therefore a producer's duplicate (a new
        offset, de-duplicated by event id), not a re-delivery."""
        tp = (source.topic, source.partition)
        offset = max(source.offset, self._offsets.get(tp, 0))  # kept when it already increases
        self._offsets[tp] = offset + 1
        return dataclasses.replace(source, offset=offset)

    def _on_users(self, batch: list[SourceRecord]) -> Effects:
        """What the worker's ``interactions`` agent does with a batch (``streams.app``)."""
        interactions, impressions = split_user_records(batch, self.topics)
        parts: list[Effects] = []  # as the worker: what a step decoded, later steps reuse
        if interactions:
            parts.append(
                self._apply(self.steps.interactions(self.state, interactions, self.now_ms))
            )
        if impressions:
            parts.append(self._apply(self.steps.impressions(self.state, impressions, self.now_ms)))
        if self.bandit_steps is not None:
            attributed = self.bandit_steps.attribution(
                self.state, batch, self.now_ms, decoded_by_position(parts)
            )
            self.outcomes += attributed.outcomes
            self._pending_outcomes += attributed.outcomes
            self.state.commit(attributed.commit)
        return merged(parts)

    def _apply(self, effects: Effects) -> Effects:
        """The runtime's order (``streams.agents``): outputs, erasure, offline log, rows, commit."""
        self._pending_updates += effects.forwards
        self.dead_letters += effects.dead_letters
        self.late += effects.late
        privacy = effects.privacy
        self.store.delete_users(sorted(privacy.delete | privacy.hide))
        for user_id in sorted(privacy.delete):
            self.event_log = [e for e in self.event_log if e.user_id != user_id]
            self.impression_log = [s for s in self.impression_log if s.user_id != user_id]
            self.erased.append(user_id)
        self.event_log += effects.applied_events
        self.impression_log += effects.applied_impressions
        self.store.write_users(effects.user_rows)
        self.state.commit(effects.commit)
        self.applied += effects.applied
        self.duplicates += effects.duplicates
        self.suppressed += effects.suppressed
        return effects

    def drain(self) -> None:
        """Run queued item updates through the item step, and outcomes through the posteriors."""
        queued, self._pending_updates = self._pending_updates, []
        if queued:
            records = [
                self._positioned(
                    SourceRecord(self.topics.item_updates, forward.partition, 0, forward.payload)
                )
                for forward in queued
            ]
            effects = self.steps.item_updates(self.state, records)
            self.dead_letters += effects.dead_letters
            self.store.write_items(effects.item_rows)
            self.state.commit(effects.commit)
        outcomes, self._pending_outcomes = self._pending_outcomes, []
        if outcomes and self.bandit_steps is not None:
            partitions = self.bandit_steps.config.partitions
            records = [
                self._positioned(
                    SourceRecord(self.topics.bandit_outcomes, message.partition, 0, message.payload)
                )
                for message in outcome_messages(outcomes, partitions)
            ]
            self.state.commit(self.bandit_steps.outcomes(self.state, records).commit)

    # -- final views ---------------------------------------------------------------------------
    def user_rows(self) -> dict[str, UserFeatureRow]:
        return {
            u: user_features.user_row(u, s, self.config)
            for u, s in sorted(self.users.items())
            if s.latest_ms is not None
        }

    def item_rows(self) -> dict[str, ItemFeatureRow]:
        return {
            i: item_features.item_row(i, s)
            for i, s in sorted(self.items.items())
            if s.latest_ms is not None
        }
