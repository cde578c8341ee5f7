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
re-delivered event never adds twice.

Order (issue 21): the counts a user contributes are those of their *transition sequence* — the
retained history in ``(event_time, event_id)`` order, without dismissed items, consecutive
repeats collapsed (:func:`transition_sequence`) — so they depend on the set of events, not on
the order they arrived in. An event that arrives in order (after every retained one) adds what
:func:`increments_for` computes from its few predecessors. Any other change — an event arriving
out of order within the lateness, a dismissal (which takes the item out of the sequence, also
before it), a dismissal evicted by newer ones — adds :func:`sequence_delta` of the sequences
before and after: the increments of the targets whose predecessor window the change touched,
new minus old, negative where a transition is retracted. Freshness is unchanged (nothing waits
for the watermark). Not retracted: transitions of history entries already dropped from the
retained history (``UserFeatureConfig.history_capacity``, far beyond the lateness).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Collection, Iterable, Mapping, Sequence

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


def transition_sequence(
    history: Iterable[tuple[int, str, str]], dismissed: Collection[str]
) -> list[str]:
    """A user's items in event-time order, without dismissed ones, repeats collapsed."""
    sequence: list[str] = []
    for _, _, item in history:
        if item in dismissed or (sequence and sequence[-1] == item):
            continue
        sequence.append(item)
    return sequence


def sequence_delta(before: Sequence[str], after: Sequence[str], window: int) -> Increments:
    """``increments_from_sequence(after) − increments_from_sequence(before)``, computed only for
    the targets whose predecessor window reaches the part where the two differ."""
    n, m = len(before), len(after)
    head = 0
    while head < n and head < m and before[head] == after[head]:
        head += 1
    if head == n == m:
        return {}
    tail = 0
    while tail < n - head and tail < m - head and before[n - 1 - tail] == after[m - 1 - tail]:
        tail += 1
    delta: Increments = {}
    _add_targets(delta, after, head, min(m, m - tail + window), window, 1.0)
    _add_targets(delta, before, head, min(n, n - tail + window), window, -1.0)
    return {pair: weight for pair, weight in delta.items() if abs(weight) > 1e-12}


def _add_targets(
    into: Increments, sequence: Sequence[str], start: int, stop: int, window: int, sign: float
) -> None:
    for position in range(max(start, 1), stop):
        previous = sequence[max(0, position - window) : position]
        for pair, weight in transition_increments(previous, sequence[position], window).items():
            into[pair] = into.get(pair, 0.0) + sign * weight


def appends_in_order(state: UserState, event: Interaction) -> bool:
    """Whether applying ``event`` only appends a consumption after every retained one (the
    common case, :func:`increments_for`); otherwise take a :func:`snapshot` first."""
    if event.event_type is EventType.DISMISS:
        return False
    history = state.history
    return not history or (event.event_time_ms, event.event_id, event.item_id) > history[-1]


Snapshot = tuple[list[tuple[int, str, str]], frozenset[str]]


def snapshot(state: UserState) -> Snapshot:
    return list(state.history), frozenset(state.dismissed)


def increments_since(before: Snapshot, state: UserState, window: int) -> Increments:
    """What the change from ``before`` to ``state`` adds to the counts (module doc). An entry the
    change pushed out of the retained history keeps its transitions (it is put back here)."""
    history, dismissed = before
    after = state.history
    if history and (not after or history[0] < after[0]):
        after = [history[0], *after]
    return sequence_delta(
        transition_sequence(history, dismissed),
        transition_sequence(after, state.dismissed),
        window,
    )


def increments_of_insertion(
    state: UserState, entry: tuple[int, str, str], front: tuple[int, str, str] | None, window: int
) -> Increments:
    """:func:`increments_since` for the commonest change, without a snapshot: ``entry``, a
    non-dismissal, was inserted into ``state.history`` (call after applying it), and ``front``
    is what ``history[0]`` was before (None if empty). The dismissed items did not change.

    Exactly what :func:`increments_since` returns (property-tested, float for float), computed
    over the few entries around the insertion: the two histories (without and with ``entry``,
    the dropped front put back) agree before it, and a transition sequence built from an index
    ``s`` equals the true one after ``[0, s)``'s part except that its first item may be a repeat
    the true one collapses. If the entries from ``s`` to the insertion yield ``window + 2``
    sequence items, every target whose increments differ lies at least ``window + 1`` places
    after that first item, so its predecessor window — and the head, tail and order
    :func:`sequence_delta` walks — are the same as over the whole histories. Out-of-order events
    land near the end, so two passes over up to ``history_capacity`` entries become two over a
    few.
    """
    history = state.history
    at = bisect_left(history, entry)
    if at == len(history) or history[at] != entry:
        return {}  # the new entry was the oldest, dropped again at capacity: nothing changed
    dismissed = state.dismissed
    item = entry[2]
    if (
        item in dismissed
        or _neighbour(history, range(at - 1, -1, -1), dismissed) == item
        or _neighbour(history, range(at + 1, len(history)), dismissed) == item
    ):
        # Not in the sequence, or next to a copy of its own item (a click or rating of what
        # was viewed at the same time): the repeat collapses, the sequence does not change.
        return {}
    start = _window_start(history, at, dismissed, window)
    if start < 0:  # the whole histories, the dropped front (if any) put back
        head = [front] if front is not None and front < history[0] else []
        before = [*head, *history[:at], *history[at + 1 :]]
        after = [*head, *history]
    else:
        before = [*history[start:at], *history[at + 1 :]]
        after = history[start:]
    return sequence_delta(
        transition_sequence(before, dismissed), transition_sequence(after, dismissed), window
    )


def increments_of_dismissal(
    state: UserState, dismissed_before: frozenset[str], window: int
) -> Increments:
    """:func:`increments_since` for a dismissal, without a snapshot of the history: a dismissal
    never changes ``state.history``, only the dismissed items (the one dismissed joins them, and
    one whose dismissal was evicted at capacity leaves them), so the two transition sequences
    agree up to the first history entry whose item is in the symmetric difference of the two
    sets. No such entry (the user never consumed what they dismissed, or had dismissed it
    already) means no change; otherwise both sequences are built from ``window + 2`` sequence
    items before that entry, as :func:`increments_of_insertion` does, and give exactly what
    :func:`increments_since` returns (property-tested, float for float). A user dismisses what
    they just viewed, so that is a few entries at the end rather than two whole histories."""
    changed = dismissed_before.symmetric_difference(state.dismissed)
    if not changed:
        return {}
    history = state.history
    first = next((i for i, entry in enumerate(history) if entry[2] in changed), None)
    if first is None:
        return {}
    part = history[max(_window_start(history, first, dismissed_before, window), 0) :]
    return sequence_delta(
        transition_sequence(part, dismissed_before),
        transition_sequence(part, state.dismissed),
        window,
    )


def _window_start(
    history: Sequence[tuple[int, str, str]], at: int, dismissed: Collection[str], window: int
) -> int:
    """The index of ``history`` from which ``window + 2`` transition-sequence items precede
    index ``at``, or -1 where the entries before ``at`` yield fewer."""
    found, last = 0, None
    for index in range(at - 1, -1, -1):
        item = history[index][2]
        if item in dismissed or item == last:
            continue
        last = item
        found += 1
        if found >= window + 2:
            return index
    return -1


def _neighbour(
    history: Sequence[tuple[int, str, str]], indices: Iterable[int], dismissed: Collection[str]
) -> str | None:
    """The first item at ``indices`` of ``history`` that is in the transition sequence."""
    for index in indices:
        item = history[index][2]
        if item not in dismissed:
            return item
    return None
