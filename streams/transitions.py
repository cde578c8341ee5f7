"""Item-to-item transition increments from the stream (feeds ``retrieval.cooccurrence``). Pure.

When an interaction is applied to a user's state, the user's *previous recent items* are the
non-dismiss items of their history that come before the event by ``(event_time, event_id)``,
without items they dismissed and with consecutive repeats collapsed (as ``recent_items``). The
increments are ``retrieval.cooccurrence.transition_increments(previous, item, window)``, so the
stream adds exactly what ``increments_from_sequence`` computes offline for in-order events.

No increments for: dismissals (not a consumption); an item the user has dismissed; a repeat of
the item that is already last in the sequence (a view, rating and click of one item at one time
count one transition, not three).

Idempotency: the worker computes increments only for events the de-duplication admitted and
writes them in the *same* Redis transaction as the user states that remember those event ids
(``streams.statestore``), so a re-delivered event never adds twice. Order: increments are taken
against the predecessors known when the event is applied, so an event arriving out of order
(within the lateness) does not re-score the transitions of the events that follow it. The
counts are a popularity-like signal read as probabilities, and this small order dependence is
accepted (documented in ``features/FEATURES.md``).
"""

from __future__ import annotations

from bisect import bisect_left

from events.models import EventType, Interaction
from retrieval.cooccurrence import Increments, transition_increments
from streams.user_features import UserState

DEFAULT_TRANSITION_WINDOW = 3  # the window retrieval's offline builder and benchmark use


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
