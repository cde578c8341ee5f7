"""Batch handlers: decoded source records + loaded states -> new states and effects. Pure.

The building blocks of the stream steps (``streams.steps``): :func:`decode_batch` splits records
into events and dead letters, each ``handle_*`` function folds decoded events into the loaded
states and says what the batch asks the outside world to do (:class:`Effects`: rows to the feature
store, item updates to the repartition topic, dead letters, late events, the state commit).

Order of checks for every source event: decode (→ dead letter), then lateness against the
partition's watermark (late → late-events topic; more than the allowed skew ahead of the
processing time ``now_ms`` → dead letter ``future_event_time``),
then de-duplication by ``event_id`` inside the keyed state (→ counted, nothing else).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from core.errors import SchemaError
from events.models import (
    EVENT_TYPE_NAMES,
    CatalogItem,
    EventType,
    Impression,
    Interaction,
    to_epoch_ms,
)
from features.rows import ItemFeatureRow, UserFeatureRow
from streams import item_features, user_features
from streams.codec import decode_updates, encode_updates
from streams.eventtime import Lateness, Verdict, advance, judge
from streams.item_features import ItemState, ItemUpdate
from streams.partitioning import ITEM_ID, by_partition
from streams.privacy import PrivacyEffects
from streams.state_port import StateCommit
from streams.transitions import (
    DEFAULT_TRANSITION_WINDOW,
    Increments,
    appends_in_order,
    increments_for,
    increments_of_dismissal,
    increments_of_insertion,
)
from streams.user_features import UserFeatureConfig, UserState

E = TypeVar("E")


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One raw Kafka message as the agent saw it."""

    topic: str
    partition: int
    offset: int
    value: bytes
    key: bytes | None = None
    timestamp_ms: int | None = None  # the broker's record timestamp (lag and freshness only)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    record: SourceRecord
    reason: str
    error: str


@dataclass(slots=True)
class Decoded(Generic[E]):
    record: SourceRecord
    event: E


Position = tuple[str, int, int]  # (topic, partition, offset) of a source record


def decoded_by_position(done: Iterable[Effects]) -> dict[Position, Any]:
    """The events that steps of one batch decoded (``Effects.decoded``), by source position:
    the later steps of the batch (attribution, drift) look them up instead of decoding again."""
    return {
        (d.record.topic, d.record.partition, d.record.offset): d.event
        for effects in done
        for d in effects.decoded
    }


@dataclass(frozen=True, slots=True)
class Forward:
    """One message to an internal re-keyed topic (``<ns>.item-updates``, ``<ns>.bandit-outcomes``):
    a JSON array of records whose keys all belong on ``partition``."""

    partition: int
    payload: bytes


@dataclass(slots=True)
class Effects:
    """What one batch asks the outside world to do."""

    user_rows: list[UserFeatureRow] = field(default_factory=list)
    item_rows: list[ItemFeatureRow] = field(default_factory=list)
    # grouped item updates: one message per item-updates partition per batch (``_forward``)
    forwards: list[Forward] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    late: list[SourceRecord] = field(default_factory=list)
    applied: int = 0
    duplicates: int = 0
    touched: set[str] = field(default_factory=set)  # keys whose state changed
    applied_events: list[Interaction] = field(default_factory=list)  # for the offline log
    applied_impressions: list[Impression] = field(default_factory=list)  # for the offline log
    transitions: Increments = field(default_factory=dict)  # item -> item weights to add
    # source partition -> request id -> event time of each slate applied (impressions only)
    slates: dict[int, dict[str, int]] = field(default_factory=dict)
    suppressed: int = 0  # events of opted-out or deleted users (``streams.privacy``)
    privacy: PrivacyEffects = field(default_factory=PrivacyEffects)  # erasures of the batch
    commit: StateCommit = field(default_factory=StateCommit)  # persisted last, atomically
    # The batch's decoded source events with their records, handed on to attribution and the
    # drift monitors so that they need not decode them again (``decoded_by_position``).
    decoded: Sequence[Decoded[Any]] = ()


def decode_batch(
    records: Iterable[SourceRecord], decoder: Callable[[bytes], E]
) -> tuple[list[Decoded[E]], list[DeadLetter]]:
    """Split a batch into decoded events and dead letters (``SchemaError.reason``)."""
    good: list[Decoded[E]] = []
    bad: list[DeadLetter] = []
    for record in records:
        try:
            good.append(Decoded(record, decoder(record.value)))
        except SchemaError as exc:
            bad.append(DeadLetter(record, exc.reason, str(exc)))
    return good, bad


def _forward(effects: Effects, updates: Iterable[ItemUpdate], partitions: int) -> None:
    """Group a batch's item updates by the ``<ns>.item-updates`` partition their item belongs to
    (murmur2 of the item id, as a keyed produce would pick): one message per partition (or a
    few, for a very large group) instead of one per update or per item. Each message still lists
    every update with its ``event_id`` and source offset, in the batch's order, so the item side
    de-duplicates and folds them exactly as before; grouping only cuts the number of messages the
    item agent consumes (the per-message cost of a Faust hop is most of what a message costs the
    worker, ``docs/benchmarks/ingest.md``)."""
    for partition, group in by_partition(updates, ITEM_ID, partitions):
        for payload in encode_updates(group):
            effects.forwards.append(Forward(partition, payload))


@functools.cache
def _source(topic: str, partition: int) -> str:
    """The ``ItemUpdate.source`` naming a source partition (``item_features.apply_update``);
    remembered, as every forwarded update names one of a few partitions."""
    return f"{topic}:{partition}"


def _admit(
    record: SourceRecord,
    event_time_ms: int,
    watermarks: MutableMapping[int, int | None],
    policy: Lateness,
    effects: Effects,
    now_ms: int | None,
) -> bool:
    verdict = judge(watermarks.get(record.partition), event_time_ms, policy, now_ms)
    if verdict is Verdict.LATE:
        effects.late.append(record)
        return False
    if verdict is Verdict.FUTURE:
        effects.dead_letters.append(
            DeadLetter(
                record,
                "future_event_time",
                f"event time {event_time_ms} is more than {policy.max_future_skew_ms} ms ahead "
                f"of the processing time {now_ms}",
            )
        )
        return False
    watermarks[record.partition] = advance(watermarks.get(record.partition), event_time_ms)
    return True


def handle_interactions(
    batch: Sequence[Decoded[Interaction]],
    users: MutableMapping[str, UserState],
    watermarks: MutableMapping[int, int | None],
    policy: Lateness,
    config: UserFeatureConfig,
    *,
    partitions: int,
    now_ms: int | None = None,
    transition_window: int = DEFAULT_TRANSITION_WINDOW,
) -> Effects:
    """Apply admitted interactions to user states; forward each newly applied one to the items.

    Every newly applied event is also listed in ``applied_events`` (offline log) and adds its
    item transitions (``streams.transitions``) to ``transitions``.

    The agent flushes the forwards before it persists the user states, so a crash in between
    re-applies and re-forwards the batch on restart; the item state skips those copies by
    their source offsets (``streams.item_features.apply_update``).
    """
    effects = Effects()
    partition_of: dict[str, int] = {}
    updates: list[ItemUpdate] = []
    # Locals for what the loop touches per event: it runs once per event of every batch.
    transitions, touched = effects.transitions, effects.touched
    applied_events = effects.applied_events
    applied = duplicates = 0
    for decoded in batch:
        event, record = decoded.event, decoded.record
        t = event.event_time_ms
        if not _admit(record, t, watermarks, policy, effects, now_ms):
            continue
        user_id = event.user_id
        state = users.get(user_id)
        if state is None:
            state = users[user_id] = UserState()
        in_order = appends_in_order(state, event)
        # A dismissal changes only the dismissed items (``increments_of_dismissal``); any other
        # out-of-order event is one insertion, whose change is local (``increments_of_insertion``).
        event_type = event.event_type
        dismissed_before = frozenset(state.dismissed) if event_type is EventType.DISMISS else None
        front = state.history[0] if state.history else None
        if not user_features.apply_interaction(state, event, config)[1]:
            duplicates += 1
            continue
        applied += 1
        touched.add(user_id)
        applied_events.append(event)
        if in_order:
            increments = increments_for(state, event, transition_window)
        elif dismissed_before is not None:
            increments = increments_of_dismissal(state, dismissed_before, transition_window)
        else:
            entry = (t, event.event_id, event.item_id)
            increments = increments_of_insertion(state, entry, front, transition_window)
        for pair, weight in increments.items():
            transitions[pair] = transitions.get(pair, 0.0) + weight
        partition_of[user_id] = record.partition
        updates.append(
            ItemUpdate(
                "interaction",
                event.item_id,
                event.event_id,
                t,
                EVENT_TYPE_NAMES[event_type],
                source=_source(record.topic, record.partition),
                source_offset=record.offset,
            )
        )
    effects.applied += applied
    effects.duplicates += duplicates
    _forward(effects, updates, partitions)
    for user_id in sorted(effects.touched):
        state = users[user_id]
        cutoff = policy.dedup_cutoff(watermarks.get(partition_of[user_id]))
        user_features.forget_old_ids(state, cutoff)
        effects.user_rows.append(user_features.user_row(user_id, state, config))
    return effects


def handle_impressions(
    batch: Sequence[Decoded[Impression]],
    watermarks: MutableMapping[int, int | None],
    policy: Lateness,
    *,
    applied: Mapping[int, Collection[str]],
    partitions: int,
    now_ms: int | None = None,
) -> Effects:
    """Admit impressions and forward one item update per (slate, item).

    A slate is applied once per source partition: ``applied`` holds the request ids of the
    batch's slates that the partition applied before (its slate memory), and a copy within the
    batch counts as a duplicate too. The newly applied ones are ``Effects.slates``.
    """
    effects = Effects()
    updates: list[ItemUpdate] = []
    for decoded in batch:
        slate = decoded.event
        record = decoded.record
        if not _admit(record, slate.event_time_ms, watermarks, policy, effects, now_ms):
            continue
        fresh = effects.slates.setdefault(record.partition, {})
        if slate.request_id in fresh or slate.request_id in applied.get(record.partition, ()):
            effects.duplicates += 1
            continue
        fresh[slate.request_id] = slate.event_time_ms
        effects.applied += 1
        effects.applied_impressions.append(slate)
        for item_id in dict.fromkeys(shown.item_id for shown in slate.items):
            updates.append(
                ItemUpdate(
                    kind="impression",
                    item_id=item_id,
                    event_id=f"imp:{slate.request_id}:{item_id}",
                    event_time_ms=slate.event_time_ms,
                    source=_source(decoded.record.topic, decoded.record.partition),
                    source_offset=decoded.record.offset,
                )
            )
    _forward(effects, updates, partitions)
    return effects


def handle_catalog(
    batch: Sequence[Decoded[CatalogItem]],
    watermarks: MutableMapping[int, int | None],
    policy: Lateness,
    *,
    partitions: int,
    now_ms: int | None = None,
) -> Effects:
    """Admit catalogue updates and forward them to the item side."""
    effects = Effects()
    updates: list[ItemUpdate] = []
    for decoded in batch:
        item = decoded.event
        if not _admit(decoded.record, item.event_time_ms, watermarks, policy, effects, now_ms):
            continue
        effects.applied += 1
        updates.append(
            ItemUpdate(
                kind="catalog",
                item_id=item.item_id,
                event_id=item.event_id,
                event_time_ms=item.event_time_ms,
                title=item.title,
                categories=item.categories,
                created_time_ms=None
                if item.created_time is None
                else to_epoch_ms(item.created_time),
                available=item.available,
                source=_source(decoded.record.topic, decoded.record.partition),
                source_offset=decoded.record.offset,
            )
        )
    _forward(effects, updates, partitions)
    return effects


def decode_item_updates(raw: bytes) -> list[ItemUpdate]:
    """Decode a repartition record (one or more updates of one item); a corrupt one is a
    ``SchemaError`` like any other payload."""
    try:
        return decode_updates(raw)
    except (ValueError, KeyError, TypeError) as exc:
        raise SchemaError(f"bad item update: {exc}", reason="invalid_item_update") from None


def flatten_updates(
    batch: Iterable[Decoded[list[ItemUpdate]]],
) -> list[Decoded[ItemUpdate]]:
    """One ``Decoded`` per update of each decoded repartition record, in record order."""
    return [Decoded(d.record, update) for d in batch for update in d.event]


def handle_item_updates(
    batch: Sequence[Decoded[ItemUpdate]],
    items: MutableMapping[str, ItemState],
    policy: Lateness,
) -> Effects:
    """Apply re-keyed updates to item states (lateness was judged at the source partition)."""
    effects = Effects()
    for decoded in batch:
        update = decoded.event
        state = items.setdefault(update.item_id, ItemState())
        _, applied = item_features.apply_update(state, update)
        if applied:
            effects.applied += 1
            effects.touched.add(update.item_id)
        else:
            effects.duplicates += 1
    margin = policy.allowed_lateness_ms + policy.dedup_horizon_ms
    for item_id in sorted(effects.touched):
        state = item_features.forget_old_ids(items[item_id], margin)
        effects.item_rows.append(item_features.item_row(item_id, state))
    return effects
