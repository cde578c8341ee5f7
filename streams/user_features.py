"""Per-user feature state machine: ``apply_interaction(state, event) -> (state, applied)``. Pure.

Every output is a function of the *set* of applied events (never of their arrival order), which is
what makes the worker order-insensitive within the allowed lateness (docs/architecture.md). The exact
definitions are in ``features/FEATURES.md``; in short:

* ``recent_items`` — take the ``2 × sequence_length`` most recent non-dismiss interactions by
  ``(event_time, event_id)``; drop those on dismissed items; collapse consecutive repeats of one
  item; keep the last ``sequence_length``; oldest first.
* ``recent_interactions`` — the same without dropping dismissed items: what a ranker trained on
  every interaction reads (``serving.pipeline``).
* ``dismissed_items`` — the ``sequence_length`` items with the most recent dismiss events, ordered by
  their latest dismiss ``(event_time, event_id)``, oldest first.
* ``activity_counts`` — ``"<event_type>_<window>"`` for windows 1h/24h/7d: the number of events of that
  type whose event-time *minute* lies in the window ending at the minute of the user's latest event
  time (``minute(t) > minute(latest) − window_minutes``). Relative to the user's own latest event,
  never to the wall clock.

Functions update the state in place and return it, bytewax style; nothing here does I/O.
"""

from __future__ import annotations

from bisect import insort
from dataclasses import dataclass, field

from events.models import EVENT_TYPE_NAMES, EVENT_TYPES, EventType, Interaction
from features.rows import UserFeatureRow
from streams.eventtime import forget_before, remember

MINUTE_MS = 60_000
ACTIVITY_WINDOWS_MINUTES: dict[str, int] = {"1h": 60, "24h": 24 * 60, "7d": 7 * 24 * 60}
_LONGEST_WINDOW = max(ACTIVITY_WINDOWS_MINUTES.values())
ACTIVITY_KEYS: tuple[str, ...] = tuple(
    f"{event_type}_{window}" for event_type in EVENT_TYPES for window in ACTIVITY_WINDOWS_MINUTES
)


@dataclass(frozen=True, slots=True)
class UserFeatureConfig:
    sequence_length: int = 200

    @property
    def history_capacity(self) -> int:
        # Twice the output length, so that filtering dismissed items and collapsing repeats
        # rarely leaves the sequence shorter than it could be.
        return 2 * self.sequence_length


@dataclass(slots=True)
class UserState:
    """What the worker keeps per user (serialised by ``streams.codec``)."""

    latest_ms: int | None = None
    seen: dict[str, int] = field(default_factory=dict)  # event_id -> event_time_ms
    history: list[tuple[int, str, str]] = field(default_factory=list)  # (t, event_id, item), sorted
    dismissed: dict[str, tuple[int, str]] = field(default_factory=dict)  # item -> latest (t, id)
    activity: dict[str, dict[int, int]] = field(default_factory=dict)  # type -> minute -> count


def apply_interaction(
    state: UserState, event: Interaction, config: UserFeatureConfig
) -> tuple[UserState, bool]:
    """Fold one admitted event into the user's state; ``applied`` is False for a duplicate."""
    t = event.event_time_ms
    if not remember(state.seen, event.event_id, t):
        return state, False
    if state.latest_ms is None or t > state.latest_ms:
        moved_minute = state.latest_ms is None or t // MINUTE_MS > state.latest_ms // MINUTE_MS
        state.latest_ms = t
        if moved_minute:
            _drop_stale_minutes(state)
    if event.event_type is EventType.DISMISS:
        _add_dismissal(state, event.item_id, (t, event.event_id), config.sequence_length)
    else:
        insort(state.history, (t, event.event_id, event.item_id))
        if len(state.history) > config.history_capacity:
            # The oldest entry can never return to the top-N of a growing set: drop it.
            del state.history[0]
    minute = t // MINUTE_MS
    if minute > state.latest_ms // MINUTE_MS - _LONGEST_WINDOW:
        buckets = state.activity.setdefault(EVENT_TYPE_NAMES[event.event_type], {})
        buckets[minute] = buckets.get(minute, 0) + 1
    return state, True


def forget_old_ids(state: UserState, cutoff_ms: int | None) -> UserState:
    """Drop de-duplication ids that can no longer matter (see ``streams.eventtime``)."""
    state.seen = forget_before(state.seen, cutoff_ms)
    return state


def user_row(user_id: str, state: UserState, config: UserFeatureConfig) -> UserFeatureRow:
    """The online feature row for a user; ``event_time_ms`` is the latest applied event time."""
    if state.latest_ms is None:
        raise ValueError(f"user {user_id!r} has no applied events")
    return UserFeatureRow(
        user_id=user_id,
        event_time_ms=state.latest_ms,
        recent_items=recent_items(state, config),
        dismissed_items=tuple(
            item for item, _ in sorted(state.dismissed.items(), key=lambda kv: kv[1])
        ),
        activity_counts=activity_counts(state),
        recent_interactions=recent_interactions(state, config),
    )


def recent_items(state: UserState, config: UserFeatureConfig) -> tuple[str, ...]:
    return _collapsed_tail(state, config, drop=state.dismissed)


def recent_interactions(state: UserState, config: UserFeatureConfig) -> tuple[str, ...]:
    return _collapsed_tail(state, config, drop={})


def _collapsed_tail(
    state: UserState, config: UserFeatureConfig, drop: dict[str, tuple[int, str]]
) -> tuple[str, ...]:
    """The history's items oldest first, those in ``drop`` left out, consecutive repeats
    collapsed, the last ``sequence_length``."""
    sequence: list[str] = []
    for _, _, item in state.history:
        if item in drop or (sequence and sequence[-1] == item):
            continue
        sequence.append(item)
    return tuple(sequence[-config.sequence_length :])


def activity_counts(state: UserState) -> dict[str, int]:
    counts = dict.fromkeys(ACTIVITY_KEYS, 0)
    if state.latest_ms is None:
        return counts
    latest_minute = state.latest_ms // MINUTE_MS
    for event_type, buckets in state.activity.items():
        for window, minutes in ACTIVITY_WINDOWS_MINUTES.items():
            start = latest_minute - minutes
            counts[f"{event_type}_{window}"] = sum(n for m, n in buckets.items() if m > start)
    return counts


def _add_dismissal(state: UserState, item: str, key: tuple[int, str], capacity: int) -> None:
    current = state.dismissed.get(item)
    if current is None or key > current:
        state.dismissed[item] = key
    if len(state.dismissed) > capacity:
        # Evict the item whose latest dismissal is oldest; it can only come back with a newer one.
        oldest = min(state.dismissed, key=state.dismissed.__getitem__)
        del state.dismissed[oldest]


def _drop_stale_minutes(state: UserState) -> None:
    assert state.latest_ms is not None
    start = state.latest_ms // MINUTE_MS - _LONGEST_WINDOW
    for event_type in list(state.activity):
        buckets = {m: n for m, n in state.activity[event_type].items() if m > start}
        if buckets:
            state.activity[event_type] = buckets
        else:
            del state.activity[event_type]
