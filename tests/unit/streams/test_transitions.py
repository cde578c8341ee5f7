"""Item transitions (``streams.transitions``): the pure increments (property-tested), the stream's
equal the offline builder's, and only newly applied events add any."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.testing import LocalPipeline, interaction, record
from streams.transitions import (
    increments_from_sequence,
    merge_increments,
    transition_increments,
)

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
