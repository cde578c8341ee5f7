"""Item transitions (``streams.transitions``): the pure increments (property-tested), the stream's
equal the offline builder's, only newly applied events add any, and the counts do not depend on
arrival order, duplicates or batching within the lateness (retractions)."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from events.models import Interaction
from streams.eventtime import Lateness
from streams.testing import LocalPipeline, interaction, record
from streams.transitions import (
    increments_from_sequence,
    increments_of_dismissal,
    increments_of_insertion,
    increments_since,
    merge_increments,
    sequence_delta,
    snapshot,
    transition_increments,
)
from streams.user_features import UserFeatureConfig, UserState, apply_interaction

T0 = 1_700_000_000_000
items = st.sampled_from([f"i{n}" for n in range(6)])
sequences = st.lists(items, max_size=12)


def _close(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(abs(a[k] - b[k]) < 1e-9 for k in a)


def test_increments_weight_by_distance_and_skip_self() -> None:
    assert transition_increments(["a", "b", "c"], "c", window=3) == {
        ("b", "c"): 0.5,
        ("a", "c"): 1 / 3,
    }
    assert transition_increments(["a", "b"], "d", window=1) == {("b", "d"): 1.0}
    assert transition_increments([], "a") == {}


@given(
    st.lists(st.dictionaries(st.tuples(items, items), st.floats(0, 10)), max_size=4), st.randoms()
)
def test_merge_increments_is_commutative(parts, rnd) -> None:
    shuffled = parts[:]
    rnd.shuffle(shuffled)
    assert _close(merge_increments(*parts), merge_increments(*shuffled))


@given(sequences)
def test_streaming_event_by_event_equals_the_batch_computation(sequence) -> None:
    streamed = merge_increments(
        *(transition_increments(sequence[:i], sequence[i]) for i in range(1, len(sequence)))
    )
    assert _close(streamed, increments_from_sequence(sequence))


def _collapse(items: list[str]) -> list[str]:
    out: list[str] = []
    for item in items:
        if not out or out[-1] != item:
            out.append(item)
    return out


@given(st.lists(st.lists(st.sampled_from("abcde"), max_size=12), min_size=1, max_size=3))
def test_in_order_streams_add_what_the_offline_builder_computes(sequences: list[list[str]]) -> None:
    events = [
        interaction(f"e{u}-{n}", f"u{u}", item, "view", T0 + n * 1000)
        for u, items in enumerate(sequences)
        for n, item in enumerate(items)
    ]
    pipeline = LocalPipeline()
    effects = pipeline.feed(record(e) for e in events)
    expected = merge_increments(*(increments_from_sequence(_collapse(s), 3) for s in sequences))
    assert effects.transitions.keys() == expected.keys()
    for pair, weight in expected.items():
        assert abs(effects.transitions[pair] - weight) < 1e-9
    assert [e.event_id for e in effects.applied_events] == [e["event_id"] for e in events]


def test_redeliveries_repeats_and_dismissals_add_nothing() -> None:
    pipeline = LocalPipeline()
    first = [interaction("1", "u", "a", "view", T0), interaction("2", "u", "b", "view", T0 + 1)]
    assert pipeline.feed(record(e) for e in first).transitions == {("a", "b"): 1.0}
    assert pipeline.feed(record(e) for e in first).transitions == {}  # duplicates
    same_item = [
        interaction("3", "u", "c", "view", T0 + 2),
        interaction("4", "u", "c", "rating", T0 + 2),
        interaction("5", "u", "c", "click", T0 + 2),
    ]
    assert pipeline.feed(record(e) for e in same_item).transitions == {
        ("b", "c"): 1.0,
        ("a", "c"): 0.5,
    }
    dismissed = [
        interaction("6", "u", "d", "dismiss", T0 + 3),
        interaction("7", "u", "d", "view", T0 + 4),
    ]
    effects = pipeline.feed(record(e) for e in dismissed)
    assert effects.transitions == {} and effects.applied == 2


@given(sequences, sequences, st.integers(1, 4))
def test_the_delta_of_two_sequences_is_the_difference_of_their_increments(before, after, window):
    whole = merge_increments(
        increments_from_sequence(after, window),
        {k: -v for k, v in increments_from_sequence(before, window).items()},
    )
    expected = {k: v for k, v in whole.items() if abs(v) > 1e-12}
    assert _close(sequence_delta(before, after, window), expected)


def _neighbours(pipeline: LocalPipeline) -> dict[str, list[tuple[str, float]]]:
    store = pipeline.state.transitions
    return store.neighbours(store.anchors(), 50)


def _same_neighbours(a: dict, b: dict) -> bool:
    """Equal probabilities (to float noise; the order of equal ones follows that noise)."""
    return a.keys() == b.keys() and all(_close(dict(a[k]), dict(b[k])) for k in a)


LATENESS = Lateness(allowed_lateness_ms=60_000)


@settings(max_examples=60)
@given(
    seed=st.integers(0, 100_000),
    n=st.integers(2, 60),
    shuffle_seed=st.integers(0, 100_000),
    batch=st.integers(1, 25),
)
def test_transitions_do_not_depend_on_arrival_order_duplicates_or_batching(
    seed: int, n: int, shuffle_seed: int, batch: int
) -> None:
    rng = random.Random(seed)
    t, events = T0, []
    for k in range(n):
        t += rng.choice((0, 1_000, 5_000, 30_000))
        kind = rng.choices(("view", "click", "rating", "dismiss"), (6, 2, 2, 1))[0]
        events.append(interaction(f"e{k}", f"u{rng.randrange(2)}", f"i{rng.randrange(5)}", kind, t))
    shuffler = random.Random(shuffle_seed)
    copies = events + [e for e in events if shuffler.random() < 0.2]
    # Bounded disorder: every event delayed by less than the allowed lateness, so none is late.
    arrival = [
        e
        for _, _, e in sorted(
            (e["event_time"] + shuffler.randrange(59_000), k, e) for k, e in enumerate(copies)
        )
    ]
    in_order, shuffled = LocalPipeline(policy=LATENESS), LocalPipeline(policy=LATENESS)
    in_order.feed(record(e) for e in events)
    for start in range(0, len(arrival), batch):
        shuffled.feed(record(e) for e in arrival[start : start + batch])
    assert shuffled.late == [] and shuffled.applied == len(events)
    assert _same_neighbours(_neighbours(shuffled), _neighbours(in_order))


def test_an_out_of_order_event_retracts_what_it_changed() -> None:
    pipeline = LocalPipeline()
    pipeline.feed(
        record(e)
        for e in [
            interaction("1", "u", "a", "view", T0),
            interaction("3", "u", "c", "view", T0 + 2_000),
        ]
    )
    assert _neighbours(pipeline) == {"a": [("c", 1.0)]}
    late = pipeline.feed([record(interaction("2", "u", "b", "view", T0 + 1_000))])
    assert late.transitions == {("a", "c"): -0.5, ("a", "b"): 1.0, ("b", "c"): 1.0}
    assert _neighbours(pipeline) == {"a": [("b", 2 / 3), ("c", 1 / 3)], "b": [("c", 1.0)]}
    dismissed = pipeline.feed([record(interaction("4", "u", "b", "dismiss", T0 + 3_000))])
    # b leaves the sequence, before its dismissal too: a -> c is a direct transition again.
    assert dismissed.transitions == {("a", "b"): -1.0, ("b", "c"): -1.0, ("a", "c"): 0.5}
    assert _neighbours(pipeline) == {"a": [("c", 1.0)]}


def test_a_transition_added_and_retracted_in_one_batch_or_in_two_leaves_no_member() -> None:
    events = [
        interaction("1", "u", "a", "view", T0),
        interaction("2", "u", "b", "view", T0 + 1_000),
        interaction("3", "u", "b", "dismiss", T0 + 2_000),
    ]
    together, apart = LocalPipeline(), LocalPipeline()
    together.feed(record(e) for e in events)
    apart.feed(record(e) for e in events[:2])
    apart.feed(record(e) for e in events[2:])
    assert _neighbours(together) == _neighbours(apart) == {}
    assert together.state.transitions.anchors() == apart.state.transitions.anchors() == []


@settings(max_examples=300)
@given(
    seed=st.integers(0, 100_000),
    n=st.integers(0, 40),
    sequence_length=st.integers(1, 6),
    window=st.integers(1, 4),
    kind=st.sampled_from(("view", "click", "rating")),
)
def test_the_insertion_delta_is_the_whole_histories_delta_float_for_float(
    seed: int, n: int, sequence_length: int, window: int, kind: str
) -> None:
    """``increments_of_insertion`` (a non-dismissal, no snapshot, a few entries around it) must
    return exactly what ``increments_since`` computes over the whole histories — same pairs,
    same floats, same order — with capacity drops, repeats and dismissed items."""
    rng = random.Random(seed)
    config = UserFeatureConfig(sequence_length=sequence_length)  # capacity 2 × length: drops
    state, t = _random_history(rng, n, config, items=4, dismissals=1)
    event = _event(
        f"x{rng.randrange(100):02d}", f"i{rng.randrange(4)}", kind, rng.randrange(T0, t + 1)
    )
    before = snapshot(state)
    front = state.history[0] if state.history else None
    _, applied = apply_interaction(state, event, config)
    assert applied
    entry = (event.event_time_ms, event.event_id, event.item_id)
    whole = increments_since(before, state, window)
    assert list(increments_of_insertion(state, entry, front, window).items()) == list(whole.items())


@settings(max_examples=300)
@given(
    seed=st.integers(0, 100_000),
    n=st.integers(0, 40),
    sequence_length=st.integers(1, 6),
    window=st.integers(1, 4),
)
def test_the_dismissal_delta_is_the_whole_histories_delta_float_for_float(
    seed: int, n: int, sequence_length: int, window: int
) -> None:
    """``increments_of_dismissal`` (no history snapshot) must return exactly what
    ``increments_since`` computes over the whole histories, with dismissals of consumed and of
    unseen items, repeated dismissals and evictions at capacity (``sequence_length``)."""
    rng = random.Random(seed)
    config = UserFeatureConfig(sequence_length=sequence_length)
    state, t = _random_history(rng, n, config, items=6, dismissals=3)
    event = _event(
        f"x{rng.randrange(100):02d}", f"i{rng.randrange(8)}", "dismiss", rng.randrange(T0, t + 1)
    )
    before = snapshot(state)
    _, applied = apply_interaction(state, event, config)
    assert applied
    whole = increments_since(before, state, window)
    fast = increments_of_dismissal(state, before[1], window)
    assert list(fast.items()) == list(whole.items())


def _random_history(
    rng: random.Random, n: int, config: UserFeatureConfig, *, items: int, dismissals: int
) -> tuple[UserState, int]:
    """A user's state after ``n`` random events on ``items`` items (ties in time, repeats,
    dismissals weighted ``dismissals`` against 10 for the rest), and the last event's time."""
    state, t = UserState(), T0
    for k in range(n):
        t += rng.choice((0, 0, 1_000))
        kind = rng.choices(("view", "click", "rating", "dismiss"), (6, 2, 2, dismissals))[0]
        apply_interaction(state, _event(f"e{k:03d}", f"i{rng.randrange(items)}", kind, t), config)
    return state, t


def _event(event_id: str, item: str, event_type: str, t: int) -> Interaction:
    return Interaction.model_validate(interaction(event_id, "u", item, event_type, t))
