"""Exactly-once input (issue 21): committed offsets skip re-delivered records, and item updates
produced again after a crash are skipped by their source offset, however long ago their event
ids were forgotten."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from streams import item_features
from streams.handlers import SourceRecord
from streams.item_features import ItemState, ItemUpdate
from streams.state_port import InMemoryStateStore, next_offsets, unconsumed
from streams.steps import StepConfig, StreamSteps
from streams.testing import EVENTS, LOCAL_TOPICS, interaction

T0 = 1_700_000_000_000
DAY_MS = 86_400_000


def _events(offsets: range, partition: int = 0) -> list[SourceRecord]:
    return [
        SourceRecord(
            EVENTS,
            partition,
            n,
            orjson.dumps(interaction(f"e{partition}-{n}", "u1", f"i{n % 3}", "click", T0 + n)),
            b"u1",
        )
        for n in offsets
    ]


def test_unconsumed_keeps_records_at_or_above_the_committed_offset_per_partition() -> None:
    records = _events(range(5)) + _events(range(3), partition=1)
    kept = unconsumed(records, {(EVENTS, 0): 3})
    assert [(r.partition, r.offset) for r in kept] == [(0, 3), (0, 4), (1, 0), (1, 1), (1, 2)]
    assert next_offsets(kept) == {(EVENTS, 0): 5, (EVENTS, 1): 3}


def test_a_redelivered_overlapping_batch_applies_only_its_new_records() -> None:
    store = InMemoryStateStore()
    steps = StreamSteps(StepConfig(LOCAL_TOPICS))
    first = steps.interactions(store, _events(range(10)), None)
    store.commit(first.commit)
    assert store.offsets["interactions"] == {(EVENTS, 0): 10}
    # Kafka delivers 5..14 again (its offsets were not committed before a crash).
    again = steps.interactions(store, _events(range(5, 15)), None)
    store.commit(again.commit)
    assert (first.applied, again.applied, again.duplicates) == (10, 5, 0)
    assert len(store.users["u1"].history) == 15
    assert steps.interactions(store, _events(range(15)), None).commit.is_empty()


def _update(source: str, offset: int, t: int) -> ItemUpdate:
    return ItemUpdate(
        kind="interaction",
        item_id="i1",
        event_id=f"{source}@{offset}",
        event_time_ms=t,
        event_type="click",
        source=source,
        source_offset=offset,
    )


def test_an_update_produced_again_after_its_id_was_forgotten_is_skipped() -> None:
    state = ItemState()
    item_features.apply_update(state, _update("events:0", 1, T0))
    item_features.apply_update(state, _update("events:0", 2, T0 + 30 * DAY_MS))
    item_features.forget_old_ids(state, DAY_MS)  # the first id is gone
    assert "events:0@1" not in state.seen
    _, applied = item_features.apply_update(state, _update("events:0", 1, T0))
    assert not applied and state.clicks == 2


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 12), min_size=1, max_size=3),
    crashes=st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20)), max_size=4),
    seed=st.randoms(use_true_random=False),
)
def test_item_state_is_the_same_whatever_the_redeliveries(
    sizes: list[int], crashes: list[tuple[int, int]], seed
) -> None:
    """Each source partition's updates arrive in offset order, and a crash replays its stream
    from an earlier offset (any number of times); the interleaving across sources is free."""
    once = ItemState()
    streams: list[list[ItemUpdate]] = []
    for p, size in enumerate(sizes):
        # event times jump by days: ids are forgotten long before a replay brings them back
        updates = [_update(f"events:{p}", n, T0 + n * DAY_MS) for n in range(size)]
        streams.append(updates)
    for updates in streams:
        for update in updates:
            item_features.apply_update(once, update)
            item_features.forget_old_ids(once, DAY_MS)
    delivered: list[list[ItemUpdate]] = []
    for updates in streams:
        stream = list(updates)
        for at, back in crashes:
            cut = min(at, len(stream))
            stream = stream[:cut] + stream[max(0, cut - back) :]
        delivered.append(stream)
    twice = ItemState()
    queues = [list(s) for s in delivered]
    while any(queues):
        queue = seed.choice([q for q in queues if q])
        item_features.apply_update(twice, queue.pop(0))
        item_features.forget_old_ids(twice, DAY_MS)
    assert (twice.clicks, twice.mass, twice.latest_ms) == (once.clicks, once.mass, once.latest_ms)
