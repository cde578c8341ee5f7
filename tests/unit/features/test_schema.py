"""Rows ↔ flat feature records: lossless for every row the stream processors can emit."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.errors import SchemaError
from features.rows import ItemFeatureRow, UserFeatureRow
from features.schema import (
    ACTIVITY_COUNT_FEATURES,
    ITEM_FEATURES,
    USER_FEATURES,
    item_record_to_row,
    item_row_to_record,
    user_record_to_row,
    user_row_to_record,
)
from streams.user_features import ACTIVITY_KEYS

ids = st.text(min_size=1, max_size=20)
times = st.integers(min_value=631_152_000_000, max_value=7_258_118_399_999)
item_lists = st.lists(ids, max_size=8).map(tuple)
counts = st.dictionaries(
    st.sampled_from(ACTIVITY_COUNT_FEATURES), st.integers(0, 2**40), max_size=6
)
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)

users = st.builds(
    UserFeatureRow,
    user_id=ids,
    event_time_ms=times,
    recent_items=item_lists,
    dismissed_items=item_lists,
    activity_counts=counts,
    recent_interactions=item_lists,
)
items = st.builds(
    ItemFeatureRow,
    item_id=ids,
    event_time_ms=times,
    popularity=finite,
    impressions=st.integers(0, 2**40),
    clicks=st.integers(0, 2**40),
    ctr=finite,
    created_time_ms=st.none() | times,
    title=st.text(max_size=30),
    categories=item_lists,
    available=st.booleans(),
)


@given(users)
def test_user_rows_round_trip(row: UserFeatureRow) -> None:
    record = user_row_to_record(row)
    assert tuple(record) == USER_FEATURES
    assert user_record_to_row(row.user_id, record) == row


@given(items)
def test_item_rows_round_trip(row: ItemFeatureRow) -> None:
    record = item_row_to_record(row)
    assert tuple(record) == ITEM_FEATURES
    assert item_record_to_row(row.item_id, record) == row


def test_zero_and_absent_counts_stay_distinct() -> None:
    zero = UserFeatureRow("u", 1_000_000_000_000, activity_counts={"click_24h": 0})
    assert user_record_to_row("u", user_row_to_record(zero)).activity_counts == {"click_24h": 0}
    assert user_row_to_record(UserFeatureRow("u", 1_000_000_000_000))["click_24h"] is None


def test_unknown_activity_count_is_a_schema_error() -> None:
    with pytest.raises(SchemaError, match="click_90d") as info:
        user_row_to_record(UserFeatureRow("u", 1_000_000_000_000, activity_counts={"click_90d": 1}))
    assert info.value.reason == "unknown_feature"


def test_activity_features_match_what_the_stream_processor_emits() -> None:
    assert set(ACTIVITY_COUNT_FEATURES) == set(ACTIVITY_KEYS)


def test_nan_from_offline_frames_reads_as_missing() -> None:
    record = {
        **item_row_to_record(ItemFeatureRow("i", 1_000_000_000_000)),
        "created_time_ms": float("nan"),
    }
    assert item_record_to_row("i", record).created_time_ms is None
