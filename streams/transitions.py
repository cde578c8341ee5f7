"""Item-to-item transition increments: what one applied event adds to the counts. Pure.

The worker owns this math; ``features.transition_store`` owns where the counts are kept (Redis
key layout, stores), and retrieval's co-occurrence source only reads them.

A user consuming ``item`` after ``previous`` (their recent items, oldest first) adds weight
``1 / distance`` to each transition ``p -> item`` for the last ``window`` items ``p`` of
``previous`` (``p != item``): :func:`transition_increments`. Increments are plain sums, so applying
any set of them in any order gives the same counts (``merge_increments`` is commutative and
associative; property-tested). :func:`increments_from_sequence` is the offline builder's view of
one user's whole sequence.

In the stream, when an interaction is applied to a user's state, the user's *previous recent
items* are the non-dismiss items of their history that come before the event by
``(event_time, event_id)``, without items they dismissed and with consecutive repeats collapsed
(as ``recent_items``): :func:`increments_for`. So the stream adds exactly what
``increments_from_sequence`` computes offline for in-order events.

No increments for: dismissals (not a consumption); an item the user has dismissed; a repeat of
the item that is already last in the sequence (a view, rating and click of one item at one time
count one transition, not three).

Idempotency: the worker computes increments only for events the de-duplication admitted and
commits them in the *same* state-store transaction as the user states that remember those event
ids and the step's consumed source offsets (``streams.state_port.StateCommit``), so a
re-delivered event never adds twice. Order:
increments are taken against the predecessors known when the event is applied, so an event
arriving out of order (within the lateness) does not re-score the transitions of the events that
follow it. The counts are a popularity-like signal read as probabilities, and this small order
dependence is accepted (documented in ``features/FEATURES.md``).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping, Sequence

from events.models import EventType, Interaction
from streams.user_features import UserState

Increments = dict[tuple[str, str], float]

DEFAULT_TRANSITION_WINDOW = 3  # the window retrieval's offline builder and benchmark use


def transition_increments(previous: Sequence[str], item: str, window: int = 3) -> Increments:
    """What consuming ``item`` right after ``previous`` (oldest first) adds to the counts."""
    increments: Increments = {}
    for distance, anchor in enumerate(reversed(previous[-window:]), start=1):
        if anchor != item:
            key = (anchor, item)
            increments[key] = increments.get(key, 0.0) + 1.0 / distance
    return increments


def increments_from_sequence(sequence: Sequence[str], window: int = 3) -> Increments:
    """All increments of one user's sequence (oldest first), as if streamed event by event."""
    total: Increments = {}
    for position in range(1, len(sequence)):
        for key, weight in transition_increments(
            sequence[:position], sequence[position], window
        ).items():
            total[key] = total.get(key, 0.0) + weight
    return total


def merge_increments(*parts: Mapping[tuple[str, str], float]) -> Increments:
    """Sum of several increment maps (commutative, associative)."""
    merged: Increments = {}
    for part in parts:
        for key, weight in part.items():
            merged[key] = merged.get(key, 0.0) + weight
    return merged


def previous_items(state: UserState, event: Interaction, window: int) -> list[str]:
    """The user's recent items strictly before ``event`` (oldest first), at most ``window``."""
    history = state.history
    end = bisect_left(history, (event.event_time_ms, event.event_id, ""))
    collected: list[str] = []
    for index in range(end - 1, -1, -1):
        item = history[index][2]
        if item in state.dismissed or (collected and collected[-1] == item):
            continue
        collected.append(item)
        if len(collected) >= window:
            break
    collected.reverse()
    return collected


def increments_for(state: UserState, event: Interaction, window: int) -> Increments:
    """Increments caused by applying ``event`` to ``state`` (call after it was applied)."""
    if window <= 0 or event.event_type is EventType.DISMISS or event.item_id in state.dismissed:
        return {}
    previous = previous_items(state, event, window)
    if previous and previous[-1] == event.item_id:
        return {}
    return transition_increments(previous, event.item_id, window)
