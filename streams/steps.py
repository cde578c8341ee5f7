"""One pure step per stream concern: ``step(state, batch) -> (state, effects)`` (bytewax style).

=====================  ==================================  =================================
step                   batch                               state (loaded through the port)
=====================  ==================================  =================================
``interactions_step``  ``<ns>.events`` + ``<ns>.privacy``  privacy markers and states of the
                       (decoded by ``decode_interactions``)  batch's users, partition watermarks
``impressions_step``   ``<ns>.impressions``                partition watermarks, which of
                                                           the batch's slates were applied
                                                           (and the privacy markers of the
                                                           slates' users, for the offline log)
``catalog_step``       ``<ns>.items``                      partition watermarks
``item_updates_step``  ``<ns>.item-updates``               states of the batch's items
=====================  ==================================  =================================

A step mutates and returns the state it is given (the caller owns it, as in bytewax's
``stateful_map``) and returns :class:`streams.handlers.Effects`, whose ``commit`` holds what the
state store must persist atomically. Nothing here does I/O or imports an I/O client.

:class:`StreamSteps` is the one driver of the steps: decode → load what the batch touches through
the ``StateStore`` port → step. The Faust runtime (``streams.agents``) and the harness
(``streams.testing``) both call it, then apply the effects in their own way and commit last.

Privacy (``streams.privacy``) is part of the interactions step: a batch's requests act before its
events; events of opted-out users and of deleted users up to the deletion time are suppressed;
a user deleted in this batch starts from nothing (their stored state is erased by the commit and
their later events in the batch fold into a fresh state).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from core.settings import StreamSettings
from events import decode
from events.models import CatalogItem, Impression, Interaction, PrivacyRequest
from streams import handlers
from streams.eventtime import Lateness
from streams.fast_decode import decode_interaction
from streams.handlers import DeadLetter, Decoded, Effects, SourceRecord
from streams.item_features import ItemState, ItemUpdate
from streams.privacy import PrivacyEffects, PrivacyStatus, handle_privacy, suppresses
from streams.state_port import (
    ImpressionState,
    InteractionState,
    SlateMemory,
    StateCommit,
    StateStore,
    unconsumed_records,
)
from streams.topics import TopicNames
from streams.transitions import DEFAULT_TRANSITION_WINDOW
from streams.user_features import UserFeatureConfig

E = TypeVar("E")


@dataclass(frozen=True, slots=True)
class StepConfig:
    """What the steps need to know: topic names, the event-time policy, feature parameters."""

    topics: TopicNames
    policy: Lateness = field(default_factory=Lateness)
    features: UserFeatureConfig = field(default_factory=UserFeatureConfig)
    max_event_bytes: int = 64 * 1024
    transition_window: int = DEFAULT_TRANSITION_WINDOW
    partitions: int = 1  # of every topic (``settings.kafka.partitions``): item updates go by it

    @classmethod
    def from_settings(
        cls, stream: StreamSettings, topics: TopicNames, partitions: int
    ) -> StepConfig:
        return cls(
            topics=topics,
            policy=lateness_policy(stream),
            features=UserFeatureConfig(sequence_length=stream.sequence_length),
            max_event_bytes=stream.max_event_bytes,
            partitions=partitions,
        )


def lateness_policy(stream: StreamSettings) -> Lateness:
    return Lateness(
        allowed_lateness_ms=stream.allowed_lateness_ms,
        dedup_horizon_ms=stream.dedup_horizon_ms,
        max_future_skew_ms=stream.max_future_skew_ms,
    )


@dataclass(slots=True)
class DecodedBatch(Generic[E]):
    """A batch split into decoded events and dead letters, with its source partitions."""

    good: list[Decoded[E]]
    bad: list[DeadLetter]
    partitions: list[int]


def decode_records(
    records: Sequence[SourceRecord], decoder: Callable[[bytes], E]
) -> DecodedBatch[E]:
    good, bad = handlers.decode_batch(records, decoder)
    return DecodedBatch(good, bad, sorted({r.partition for r in records}))


# -- interactions (with privacy) -----------------------------------------------------------------
@dataclass(slots=True)
class InteractionBatch:
    requests: DecodedBatch[PrivacyRequest]
    events: DecodedBatch[Interaction]

    def user_ids(self) -> set[str]:
        return {d.event.user_id for d in self.requests.good} | {
            d.event.user_id for d in self.events.good
        }


def decode_interactions(records: Sequence[SourceRecord], config: StepConfig) -> InteractionBatch:
    """Privacy requests and events of one batch (events: every record not on the privacy topic)."""
    limit = config.max_event_bytes
    privacy_topic = config.topics.privacy
    return InteractionBatch(
        requests=decode_records(
            [r for r in records if r.topic == privacy_topic],
            lambda raw: decode(raw, PrivacyRequest, max_bytes=limit),
        ),
        events=decode_records(
            [r for r in records if r.topic != privacy_topic],
            lambda raw: decode_interaction(raw, max_bytes=limit),
        ),
    )


def interactions_step(
    state: InteractionState,
    batch: InteractionBatch,
    config: StepConfig,
    now_ms: int | None = None,
) -> tuple[InteractionState, Effects]:
    """Privacy requests, then the events they do not suppress, folded into user states.

    Effects: user rows, item updates to forward, dead letters, late events, applied events (for
    the offline log), transitions, ``privacy`` (users to erase and to hide) and the commit.
    """
    statuses = state.privacy
    requests = batch.requests.good
    privacy = handle_privacy(requests, statuses) if requests else PrivacyEffects()
    kept = [
        d
        for d in batch.events.good
        if not suppresses(statuses.get(d.event.user_id), d.event.event_time_ms)
    ]
    # A user deleted in this batch starts from nothing (their stored state is being erased).
    kept_users = {d.event.user_id for d in kept} - privacy.delete
    users = {u: s for u, s in state.users.items() if u in kept_users}
    effects = handlers.handle_interactions(
        kept,
        users,
        state.watermarks,
        config.policy,
        config.features,
        partitions=config.partitions,
        now_ms=now_ms,
        transition_window=config.transition_window,
    )
    effects.suppressed = len(batch.events.good) - len(kept)
    effects.dead_letters[:0] = [*batch.requests.bad, *batch.events.bad]
    effects.privacy = privacy
    effects.commit = StateCommit(
        watermarks={config.topics.events: dict(state.watermarks)},
        users={u: users[u] for u in effects.touched},
        forget_users=set(privacy.delete),
        privacy={u: statuses[u] for u in privacy.touched},
        transitions=effects.transitions,
        seen=seen_by_user(effects.applied_events),
    )
    after = {u: s for u, s in state.users.items() if u not in privacy.delete}
    after.update(users)
    return InteractionState(privacy=statuses, users=after, watermarks=state.watermarks), effects


def seen_by_user(events: Iterable[Interaction]) -> dict[str, set[str]]:
    """Each user's items among ``events`` (every type, dismissals too): their seen-set adds."""
    seen: dict[str, set[str]] = {}
    for event in events:
        seen.setdefault(event.user_id, set()).add(event.item_id)
    return seen


# -- impressions and catalogue: admitted, then forwarded to the item side ------------------------
def impressions_step(
    state: ImpressionState,
    batch: DecodedBatch[Impression],
    config: StepConfig,
    now_ms: int | None = None,
) -> tuple[ImpressionState, Effects]:
    """Admit slates not applied before and forward one item update per (slate, item).

    The request ids of applied slates are remembered per source partition (``SlateMemory``)
    while ``event_time ≥ watermark − allowed_lateness − dedup_horizon``, as events' ids are in
    the user state (``streams.eventtime``): a copy produced again is not counted again by the
    items it showed. That is what lets the item state keep no event ids
    (``streams.item_features``). Copies meet on one partition because a keyed record is
    re-routed to its key's partition (``streams.routing``).
    """
    watermarks = state.watermarks
    effects = handlers.handle_impressions(
        batch.good,
        watermarks,
        config.policy,
        applied=state.applied,
        partitions=config.partitions,
        now_ms=now_ms,
    )
    effects = _forwarded(effects, batch, watermarks, config.topics.impressions)
    effects.commit.slates = {
        p: SlateMemory(effects.slates.get(p, {}), config.policy.dedup_cutoff(watermarks.get(p)))
        for p in batch.partitions
    }
    for p, fresh in effects.slates.items():
        state.applied.setdefault(p, set()).update(fresh)
    return state, effects


def loggable_impressions(
    slates: Sequence[Impression], statuses: Mapping[str, PrivacyStatus]
) -> list[Impression]:
    """The admitted slates the offline log may keep: not those of a user who opted out, nor
    those of a deleted user up to the deletion (the privacy rule for events, ``suppresses``).
    Serving and attribution are not affected: only what is kept offline."""
    return [s for s in slates if not suppresses(statuses.get(s.user_id), s.event_time_ms)]


def catalog_step(
    watermarks: dict[int, int | None],
    batch: DecodedBatch[CatalogItem],
    config: StepConfig,
    now_ms: int | None = None,
) -> tuple[dict[int, int | None], Effects]:
    """Admit catalogue updates and forward them to the item side."""
    effects = handlers.handle_catalog(
        batch.good, watermarks, config.policy, partitions=config.partitions, now_ms=now_ms
    )
    return watermarks, _forwarded(effects, batch, watermarks, config.topics.items)


def _forwarded(
    effects: Effects,
    batch: DecodedBatch[E],
    watermarks: dict[int, int | None],
    topic: str,
) -> Effects:
    effects.dead_letters[:0] = batch.bad
    effects.commit = StateCommit(watermarks={topic: dict(watermarks)})
    return effects


# -- item updates (re-keyed by item) -------------------------------------------------------------
def decode_item_updates(records: Sequence[SourceRecord]) -> DecodedBatch[ItemUpdate]:
    """One ``Decoded`` per update of each repartition record (a record groups one item's)."""
    grouped = decode_records(records, handlers.decode_item_updates)
    return DecodedBatch(handlers.flatten_updates(grouped.good), grouped.bad, grouped.partitions)


def item_updates_step(
    items: dict[str, ItemState], batch: DecodedBatch[ItemUpdate], config: StepConfig
) -> tuple[dict[str, ItemState], Effects]:
    """Fold re-keyed updates into item states (lateness was judged at the source partition)."""
    effects = handlers.handle_item_updates(batch.good, items, config.policy)
    effects.dead_letters[:0] = batch.bad
    effects.commit = StateCommit(items={i: items[i] for i in effects.touched})
    return items, effects


def split_user_records(
    records: Sequence[SourceRecord], topics: TopicNames
) -> tuple[list[SourceRecord], list[SourceRecord]]:
    """The ``interactions`` agent's routing of one batch: events and privacy requests to the
    interactions step, impressions to the impressions step (attribution sees the whole batch)."""
    interactions = [r for r in records if r.topic != topics.impressions]
    impressions = [r for r in records if r.topic == topics.impressions]
    return interactions, impressions


# -- the driver both the runtime and the harness call --------------------------------------------
class StreamSteps:
    """Decode, load through the port, step. The caller applies the effects, then commits
    ``effects.commit`` (last, so that a crash before it re-delivers the batch harmlessly)."""

    def __init__(self, config: StepConfig) -> None:
        self.config = config

    def interactions(
        self, store: StateStore, records: Sequence[SourceRecord], now_ms: int | None
    ) -> Effects:
        records, consumed = unconsumed_records(store, "interactions", records)
        if not records:
            return Effects()
        batch = decode_interactions(records, self.config)
        # One round trip: privacy markers and states of every user in the batch, watermarks.
        state = store.load_interactions(
            batch.user_ids(), self.config.topics.events, batch.events.partitions
        )
        _, effects = interactions_step(state, batch, self.config, now_ms)
        effects.commit.offsets["interactions"] = consumed
        effects.decoded = batch.events.good
        return effects

    def impressions(
        self, store: StateStore, records: Sequence[SourceRecord], now_ms: int | None
    ) -> Effects:
        records, consumed = unconsumed_records(store, "impressions", records)
        if not records:
            return Effects()
        limit = self.config.max_event_bytes
        batch = decode_records(records, lambda raw: decode(raw, Impression, max_bytes=limit))
        requests: dict[int, set[str]] = {}
        for d in batch.good:
            requests.setdefault(d.record.partition, set()).add(d.event.request_id)
        state = store.load_impressions(self.config.topics.impressions, batch.partitions, requests)
        _, effects = impressions_step(state, batch, self.config, now_ms)
        if effects.applied_impressions:
            statuses = store.load_privacy({s.user_id for s in effects.applied_impressions})
            effects.applied_impressions = loggable_impressions(
                effects.applied_impressions, statuses
            )
        effects.commit.offsets["impressions"] = consumed
        effects.decoded = batch.good
        return effects

    def catalog(
        self, store: StateStore, records: Sequence[SourceRecord], now_ms: int | None
    ) -> Effects:
        records, consumed = unconsumed_records(store, "catalog", records)
        if not records:
            return Effects()
        limit = self.config.max_event_bytes
        batch = decode_records(records, lambda raw: decode(raw, CatalogItem, max_bytes=limit))
        watermarks = store.load_watermarks(self.config.topics.items, batch.partitions)
        _, effects = catalog_step(watermarks, batch, self.config, now_ms)
        effects.commit.offsets["catalog"] = consumed
        effects.decoded = batch.good
        return effects

    def item_updates(self, store: StateStore, records: Sequence[SourceRecord]) -> Effects:
        records, consumed = unconsumed_records(store, "item_features", records)
        if not records:
            return Effects()
        batch = decode_item_updates(records)
        items = store.load_items(_item_ids(batch.good))
        _, effects = item_updates_step(items, batch, self.config)
        effects.commit.offsets["item_features"] = consumed
        return effects


def _item_ids(updates: Iterable[Decoded[ItemUpdate]]) -> set[str]:
    return {d.event.item_id for d in updates}
