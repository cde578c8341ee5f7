"""Per-item feature state machine over ``ItemUpdate`` records. Pure.

Item state is keyed by ``item_id``; its inputs come from three source topics (interactions keyed by
user, impressions keyed by user, catalogue keyed by item), re-keyed by item through one internal
repartition topic as :class:`ItemUpdate` records. Like the user state, every output is a function
of the *set* of applied updates; definitions in ``features/FEATURES.md``, their constants in
``features.schema``:

* ``popularity`` — ``Σ_b mass_b · 2^(−(ref − start_b) / half_life)`` over hourly event-time buckets
  ``b`` with ``start_b > ref − horizon``, where ``mass_b`` is the sum of event-type weights of the
  item's interactions in the bucket and ``ref`` is the item's latest *interaction* time, which the
  row carries as ``popularity_time_ms``. A reader decays it to its own time ``t`` by
  ``× 2^(−(t − ref) / half_life)``. Impressions and catalogue updates move the row's
  ``event_time_ms`` but never ``ref``: impressions are stamped at serving time (the wall clock,
  possibly years after a replayed dataset's interactions), and decaying or pruning the mass to
  that time would take every item shown out of "trending" (issue 17).
* ``clicks`` / ``impressions`` — counts of applied click events / slates that showed the item;
  ``ctr = (clicks + α) / (max(impressions, clicks) + α + β)`` (Beta(α=1, β=19) prior, mean 5 %).
* ``created_time_ms`` — the smallest ``created_time`` (or, when absent, event time) over the item's
  catalogue updates; ``title``/``categories``/``available`` — from the catalogue update with the
  greatest ``(event_time, event_id)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from features.rows import ItemFeatureRow
from features.schema import (
    CTR_PRIOR_CLICKS,
    CTR_PRIOR_NON_CLICKS,
    POPULARITY_EVENT_WEIGHTS,
    POPULARITY_HALF_LIFE_MS,
    POPULARITY_HORIZON_MS,
)
from streams.eventtime import forget_before, remember

HOUR_MS = 3_600_000  # the width of a popularity bucket

UpdateKind = Literal["interaction", "impression", "catalog"]


class ItemUpdate(NamedTuple):
    """One re-keyed input of an item's state (the repartition topic's payload).

    A named tuple, immutable as a frozen dataclass, because one is built per applied event on the
    user side and once more when the item side decodes it, and a tuple is built without the
    frozen dataclass's ``object.__setattr__`` call per field.
    """

    kind: UpdateKind
    item_id: str
    event_id: str
    event_time_ms: int
    event_type: str = ""  # interactions only
    title: str = ""  # catalogue only, from here on
    categories: tuple[str, ...] = ()
    created_time_ms: int | None = None
    available: bool = True
    # Where the update came from: ``<topic>:<partition>`` of the source record and its offset.
    # The item state keeps the highest offset applied per source partition (``source_marks``),
    # so an update produced again (the user side re-processed its batch after a crash) or
    # delivered again is skipped however long ago its ``event_id`` was forgotten (issue 21).
    source: str = ""
    source_offset: int = -1


@dataclass(slots=True)
class ItemState:
    latest_ms: int | None = None  # latest update of any kind: the row's event_time_ms
    interaction_ms: int | None = None  # latest interaction: where popularity is referenced
    seen: dict[str, int] = field(default_factory=dict)  # ids of updates without a source
    mass: dict[int, int] = field(default_factory=dict)  # hour bucket -> summed weights
    clicks: int = 0
    impressions: int = 0
    created_time_ms: int | None = None
    catalog_key: tuple[int, str] | None = None  # (event_time, event_id) of the winning update
    title: str = ""
    categories: tuple[str, ...] = ()
    available: bool = True
    source_marks: dict[str, int] = field(default_factory=dict)  # source partition -> offset


def apply_update(state: ItemState, update: ItemUpdate) -> tuple[ItemState, bool]:
    """Fold one update into the item's state; ``applied`` is False for a duplicate.

    Updates of one item from one source partition arrive in source-offset order (one worker owns
    the partition and forwards in order; a re-processed batch forwards again from an earlier
    offset), so an offset at or below the item's mark for that partition was applied already.

    An update with a source needs no event-id memory here: the source side forwards each event
    once (interactions: the user state's ids; slates: the impressions step's slate memory) and a
    catalogue update is idempotent (minimum creation time, greatest ``(event_time, event_id)``
    wins), so only a re-forwarded copy can repeat, and the mark catches it. Without that
    memory an item's state stays a few counters and buckets however many impressions it gets,
    instead of a day of ids decoded and re-written by every batch that touches it. Updates
    without a source (written before the marks) are still de-duplicated by id.
    """
    t = update.event_time_ms
    if update.source:
        if update.source_offset <= state.source_marks.get(update.source, -1):
            return state, False
        state.source_marks[update.source] = update.source_offset
    elif not remember(state.seen, update.event_id, t):
        return state, False
    if state.latest_ms is None or t > state.latest_ms:
        state.latest_ms = t
    if update.kind == "interaction":
        _apply_interaction(state, update)
    elif update.kind == "impression":
        state.impressions += 1
    else:
        _apply_catalog(state, update)
    return state, True


def forget_old_ids(state: ItemState, dedup_margin_ms: int) -> ItemState:
    """Drop ids older than ``latest − margin`` (margin = allowed lateness + dedup horizon)."""
    if state.latest_ms is not None:
        state.seen = forget_before(state.seen, state.latest_ms - dedup_margin_ms)
    return state


def item_row(item_id: str, state: ItemState) -> ItemFeatureRow:
    if state.latest_ms is None:
        raise ValueError(f"item {item_id!r} has no applied updates")
    return ItemFeatureRow(
        item_id=item_id,
        event_time_ms=state.latest_ms,
        popularity=popularity(state),
        popularity_time_ms=state.interaction_ms,
        impressions=state.impressions,
        clicks=state.clicks,
        ctr=(state.clicks + CTR_PRIOR_CLICKS)
        / (max(state.impressions, state.clicks) + CTR_PRIOR_CLICKS + CTR_PRIOR_NON_CLICKS),
        created_time_ms=state.created_time_ms,
        title=state.title,
        categories=state.categories,
        available=state.available,
    )


def popularity(state: ItemState) -> float:
    """The decayed interaction mass at the item's latest interaction (module docstring)."""
    ref = state.interaction_ms
    if ref is None:
        return 0.0
    # Summed in bucket order so that the float result does not depend on arrival order.
    return sum(
        state.mass[b] * 2.0 ** (-(ref - b * HOUR_MS) / POPULARITY_HALF_LIFE_MS)
        for b in sorted(state.mass)
        if _in_horizon(b, ref)
    )


def _in_horizon(bucket: int, ref_ms: int) -> bool:
    return bucket * HOUR_MS > ref_ms - POPULARITY_HORIZON_MS


def _apply_interaction(state: ItemState, update: ItemUpdate) -> None:
    t = update.event_time_ms
    if state.interaction_ms is None or t > state.interaction_ms:
        if state.interaction_ms is None or t // HOUR_MS > state.interaction_ms // HOUR_MS:
            state.mass = {b: m for b, m in state.mass.items() if _in_horizon(b, t)}
        state.interaction_ms = t
    weight = POPULARITY_EVENT_WEIGHTS.get(update.event_type, 0)
    bucket = t // HOUR_MS
    if weight and _in_horizon(bucket, state.interaction_ms):
        state.mass[bucket] = state.mass.get(bucket, 0) + weight
    if update.event_type == "click":
        state.clicks += 1


def _apply_catalog(state: ItemState, update: ItemUpdate) -> None:
    created = update.created_time_ms if update.created_time_ms is not None else update.event_time_ms
    if state.created_time_ms is None or created < state.created_time_ms:
        state.created_time_ms = created
    key = (update.event_time_ms, update.event_id)
    if state.catalog_key is None or key > state.catalog_key:
        state.catalog_key = key
        state.title = update.title
        state.categories = update.categories
        state.available = update.available
