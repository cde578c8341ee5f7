"""Grouped repartition records: one message per item-updates partition per batch, the same item
state as one record per update."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.errors import SchemaError
from events import decode_interaction
from events.models import Interaction
from streams import handlers
from streams.codec import decode_update, decode_updates, encode_update, encode_updates
from streams.eventtime import Lateness
from streams.handlers import Decoded, Forward, SourceRecord
from streams.item_features import ItemState, ItemUpdate
from streams.partitioning import partition_for_key
from streams.testing import EVENTS, LocalPipeline, interaction, record
from streams.user_features import UserFeatureConfig

T0 = 1_700_000_000_000

updates = st.builds(
    ItemUpdate,
    kind=st.sampled_from(["interaction", "impression", "catalog"]),
    item_id=st.sampled_from(["i1", "i2"]),
    event_id=st.text(min_size=1, max_size=12),
    event_time_ms=st.integers(0, 2**53),
    event_type=st.sampled_from(["", "view", "click"]),
    title=st.text(max_size=300),
    categories=st.lists(st.text(max_size=5), max_size=3).map(tuple),
    created_time_ms=st.none() | st.integers(0, 2**53),
    available=st.booleans(),
    source=st.sampled_from(["", "events:0", "impressions:3"]),
    source_offset=st.integers(-1, 2**53),
)


@given(st.lists(updates, max_size=40), st.integers(min_value=2, max_value=2000))
def test_grouped_messages_round_trip_and_stay_under_the_size_unless_alone(
    batch: list[ItemUpdate], max_bytes: int
) -> None:
    messages = encode_updates(batch, max_bytes)
    decoded = [update for message in messages for update in decode_updates(message)]
    # Grouping keeps everything the single-update record keeps (fields a kind does not use drop).
    assert decoded == [decode_update(encode_update(update)) for update in batch]
    for message in messages:
        assert len(message) <= max_bytes or len(decode_updates(message)) == 1
    assert all(decode_updates(message) for message in messages)  # no empty message


def test_a_single_update_record_written_before_grouping_still_decodes() -> None:
    update = ItemUpdate("interaction", "i1", "e1", T0, event_type="click")
    assert decode_updates(encode_update(update)) == [update]


def _events(*specs: tuple[str, str, str, str]) -> list[Decoded[Interaction]]:
    out = []
    for n, (event_id, user, item, event_type) in enumerate(specs):
        raw = orjson.dumps(interaction(event_id, user, item, event_type, T0 + n))
        out.append(Decoded(SourceRecord(EVENTS, 0, n, raw), decode_interaction(raw)))
    return out


def test_a_batch_forwards_one_message_per_partition_each_item_on_its_murmur2_partition() -> None:
    batch = _events(
        ("e1", "u1", "i1", "view"),
        ("e2", "u2", "i1", "click"),
        ("e3", "u1", "i2", "view"),
        ("e4", "u3", "i1", "view"),
        ("e4", "u3", "i1", "view"),  # a duplicate is not forwarded again
        *[(f"x{n}", "u4", f"item-{n}", "view") for n in range(40)],
    )
    effects = handlers.handle_interactions(
        batch, {}, {}, Lateness(), UserFeatureConfig(), partitions=4
    )
    partitions = [forward.partition for forward in effects.forwards]
    assert partitions == sorted(set(partitions)) == [0, 1, 2, 3]  # 42 items, one message each
    by_item: dict[str, list[str]] = {}
    for forward in effects.forwards:
        for update in decode_updates(forward.payload):
            assert forward.partition == partition_for_key(update.item_id.encode(), 4)
            by_item.setdefault(update.item_id, []).append(update.event_id)
    assert by_item["i1"] == ["e1", "e2", "e4"]  # in the batch's order
    assert by_item["i2"] == ["e3"]
    assert len(by_item) == 42


@given(st.lists(st.sampled_from(range(6)), min_size=1, max_size=30))
def test_grouped_forwarding_gives_the_item_state_of_one_record_per_update(picks: list[int]) -> None:
    """Item state from the grouped records equals item state from one legacy record per update,
    re-delivered groups included (the item state de-duplicates by event id)."""
    types = ["view", "click", "rating", "dismiss", "purchase", "view"]
    batch = _events(*[(f"e{p}", f"u{p % 2}", f"i{p % 3}", types[p]) for p in picks])
    effects = handlers.handle_interactions(
        batch, {}, {}, Lateness(), UserFeatureConfig(), partitions=2
    )
    grouped_records = [
        SourceRecord("item-updates", forward.partition, n, forward.payload)
        for n, forward in enumerate(effects.forwards)
    ]
    decoded, bad = handlers.decode_batch(grouped_records * 2, handlers.decode_item_updates)
    assert not bad
    grouped_items: dict[str, ItemState] = {}
    handlers.handle_item_updates(handlers.flatten_updates(decoded), grouped_items, Lateness())

    single = [u for d in decoded for u in d.event]
    single_records = [
        SourceRecord("item-updates", 0, n, encode_update(u)) for n, u in enumerate(single)
    ]
    decoded_single, _ = handlers.decode_batch(single_records, handlers.decode_item_updates)
    single_items: dict[str, ItemState] = {}
    handlers.handle_item_updates(handlers.flatten_updates(decoded_single), single_items, Lateness())
    assert grouped_items == single_items


def test_a_corrupt_grouped_record_is_a_dead_letter() -> None:
    pipeline = LocalPipeline()
    pipeline._pending_updates.append(Forward(0, b'[{"k": "interaction"}]'))  # no item id
    pipeline.drain()
    assert [letter.reason for letter in pipeline.dead_letters] == ["invalid_item_update"]


def test_the_local_pipeline_folds_grouped_records_into_items() -> None:
    pipeline = LocalPipeline()
    pipeline.feed(
        [
            record(interaction("a", "u1", "i1", "click", T0)),
            record(interaction("b", "u2", "i1", "click", T0 + 1)),
        ]
    )
    assert pipeline.item_rows()["i1"].clicks == 2


def test_an_empty_group_is_a_bad_record_not_silently_nothing() -> None:
    with pytest.raises(SchemaError) as raised:
        handlers.decode_item_updates(b"[]")
    assert raised.value.reason == "invalid_item_update"
