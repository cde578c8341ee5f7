"""What the drift monitor consumes: small immutable observations, built from decoded events.

Each observation type is a ``NamedTuple`` whose first two fields are ``(event_time_ms, id)``:
sorting a window's observations sorts them in the canonical order ``(event_time, id)`` that every
detector is fed in, and the id is the de-duplication key (``event_id``, ``request_id``,
``outcome_id``, the sampler's sequence number). Tuples, not frozen dataclasses, because a replay
builds millions of them and sorts them natively.

Coldness is decided by the caller (it owns the user and item features): the monitor keeps no
per-user or per-item history beyond the exposure window, so its state stays bounded.

The ``*_from_*`` helpers map the public topic models (``events.models``) onto observations, so a
Faust agent hands over what it already decoded.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from events.models import Impression, Interaction


class EventSeen(NamedTuple):
    """An applied interaction (events topic): feeds the input signals and the dismiss share."""

    event_time_ms: int
    event_id: str
    event_type: str
    cold_user: bool = False
    cold_item: bool = False


class ServedItem(NamedTuple):
    item_id: str
    source: str
    cold: bool = False


class SlateServed(NamedTuple):
    """A served slate (impressions topic): exposure, source mix and the ranker's top score."""

    event_time_ms: int
    request_id: str
    arm: str
    items: tuple[ServedItem, ...]
    top_score: float | None = None


class SlotOutcome(NamedTuple):
    """The attributed outcome of one shown slot: click bit (CTR) and dismiss bit.

    ``event_time_ms`` is the impression's event time. Outcomes are decided up to the attribution
    window after it, so a monitor fed with outcomes needs an allowed lateness of at least the
    attribution window plus the stream's own lateness (``MonitorConfig.allowed_lateness_ms``).
    """

    event_time_ms: int
    outcome_id: str
    arm: str
    source: str
    clicked: bool
    dismissed: bool = False


class PipelineSample(NamedTuple):
    """One reading of the worker's own health, taken by its sampler (processing time).

    Pipeline signals measure the process, not the event log: they are stamped by the sampler's
    clock and applied in ``(at_ms, sample_id)`` order as soon as they arrive (a stalled consumer
    must still be seen while its event-time watermark stands still). A sample at or before the
    last applied one is a duplicate and ignored.
    """

    at_ms: int
    sample_id: int
    lag_seconds: float
    freshness_seconds: float | None = None
    dead_letters: int = 0
    events: int = 0


@dataclass(frozen=True, slots=True)
class Batch:
    """Everything one stream batch hands to :func:`monitoring.monitor.step`."""

    events: Sequence[EventSeen] = ()
    slates: Sequence[SlateServed] = ()
    outcomes: Sequence[SlotOutcome] = ()
    samples: Sequence[PipelineSample] = ()

    def __len__(self) -> int:
        return len(self.events) + len(self.slates) + len(self.outcomes) + len(self.samples)


def event_from_interaction(
    event: Interaction, *, cold_user: bool = False, cold_item: bool = False
) -> EventSeen:
    return EventSeen(
        event.event_time_ms, event.event_id, event.event_type.value, cold_user, cold_item
    )


def slate_from_impression(
    impression: Impression, *, cold_items: Collection[str] = ()
) -> SlateServed:
    """The ranker's top score is the highest item score of the slate (``None`` when empty)."""
    items = tuple(
        ServedItem(item.item_id, item.source, item.item_id in cold_items)
        for item in impression.items
    )
    top = max((item.score for item in impression.items), default=None)
    return SlateServed(
        impression.event_time_ms, impression.request_id, impression.experiment_arm, items, top
    )


def outcomes_from_impression(
    impression: Impression, clicked: Collection[str], dismissed: Collection[str] = ()
) -> list[SlotOutcome]:
    """One outcome per shown slot, ids ``"{request_id}|{item_id}"`` as bandit attribution uses."""
    return [
        SlotOutcome(
            impression.event_time_ms,
            f"{impression.request_id}|{item.item_id}",
            impression.experiment_arm,
            item.source,
            item.item_id in clicked,
            item.item_id in dismissed,
        )
        for item in impression.items
    ]
