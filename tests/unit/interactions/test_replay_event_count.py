"""``rating_event_count`` says how many events ``rating_events`` makes, without making them."""

from __future__ import annotations

import pandas as pd
from hypothesis import given
from hypothesis import strategies as st

from interactions.replay import rating_event_count, rating_events

RATING_VALUES = st.sampled_from([0.5, 1.0, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0])


@given(st.lists(RATING_VALUES, max_size=30))
def test_the_count_is_the_number_of_events_replayed(values: list[float]) -> None:
    ratings = pd.DataFrame(
        {
            "user_id": [f"u{k % 3}" for k in range(len(values))],
            "item_id": [f"i{k}" for k in range(len(values))],
            "rating": pd.Series(values, dtype="float32"),
            "timestamp_ms": pd.Series(range(len(values)), dtype="int64"),
        }
    )
    assert rating_event_count(ratings) == len(list(rating_events("ml", ratings)))
