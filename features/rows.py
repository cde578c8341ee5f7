"""Feature rows: what the stream processors emit and the online store persists.

Every row carries ``event_time_ms``, the largest event time that contributed to it; a store never
replaces a row by one with a smaller ``event_time_ms`` (docs/architecture.md, event-time rules).
Definitions of each field live in ``features/FEATURES.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class UserFeatureRow:
    user_id: str
    event_time_ms: int
    recent_items: tuple[str, ...] = ()  # oldest first, ≤ sequence_length, dismissed removed
    dismissed_items: tuple[str, ...] = ()
    activity_counts: dict[str, int] = field(default_factory=dict)  # e.g. "click_24h" -> 3
    # The ranker's input for a model trained on every interaction: as ``recent_items`` with the
    # dismissed items kept (``()`` in a row written before the field existed).
    recent_interactions: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ItemFeatureRow:
    item_id: str
    event_time_ms: int
    popularity: float = 0.0  # event-time-decayed interaction mass, at popularity_time_ms
    # The item's latest interaction, where ``popularity`` is referenced (features/FEATURES.md);
    # ``None``: referenced at ``event_time_ms`` (a row written without one, e.g. by hand).
    popularity_time_ms: int | None = None
    impressions: int = 0
    clicks: int = 0
    ctr: float = 0.0  # smoothed click-through rate
    created_time_ms: int | None = None
    title: str = ""
    categories: tuple[str, ...] = ()
    available: bool = True
