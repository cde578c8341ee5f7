"""Item transitions from the stream (``streams.transitions``) equal the offline builder's, and
only newly applied events add any."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from retrieval.cooccurrence import increments_from_sequence, merge_increments
from streams.testing import LocalPipeline, interaction, record

T0 = 1_700_000_000_000


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
