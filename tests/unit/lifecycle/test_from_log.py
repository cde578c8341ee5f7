"""The offline log's events back as the trainer's interactions: a MovieLens replay comes back as
the dataset's own ratings, so ``aether train --from-log`` sees what ``--dataset`` would."""

from __future__ import annotations

import orjson
import pandas as pd

from interactions.movielens import load_movielens
from interactions.replay import rating_events
from lifecycle.from_log import interactions_from_events


def logged(messages) -> pd.DataFrame:
    """Replay messages as ``OfflineEventLog.read`` returns them (ordered by time, event id)."""
    rows = []
    for message in messages:
        body = orjson.loads(message.value)
        rows.append(
            {
                "event_id": body["event_id"],
                "event_type": body["event_type"],
                "user_id": body["user_id"],
                "item_id": body["item_id"],
                "event_time_ms": int(body["event_time"]),
                "value": body.get("value"),
            }
        )
    frame = pd.DataFrame(rows)
    return frame.sort_values(["event_time_ms", "event_id"], kind="stable").reset_index(drop=True)


def test_a_replayed_dataset_comes_back_as_its_ratings() -> None:
    ratings = load_movielens("ml-latest-small").ratings.iloc[:3000].reset_index(drop=True)
    events = logged(rating_events("ml-latest-small", ratings))
    assert set(events["event_type"]) >= {"view", "rating", "click", "dismiss"}

    back = interactions_from_events(events)

    pd.testing.assert_frame_equal(back, ratings[back.columns.tolist()], check_dtype=False)


def test_pairs_start_at_their_first_consumption_and_keep_their_latest_rating() -> None:
    events = pd.DataFrame(
        [
            ("e1", "dismiss", "u", "a", 10, None),  # negative feedback: not consumed
            ("e2", "view", "u", "a", 20, None),
            ("e3", "rating", "u", "a", 30, 2.0),
            ("e4", "rating", "u", "a", 40, 4.5),  # a later rating wins
            ("e5", "click", "u", "b", 15, None),
            ("e6", "dismiss", "v", "a", 50, None),  # dismissed only: not an interaction
        ],
        columns=["event_id", "event_type", "user_id", "item_id", "event_time_ms", "value"],
    )
    back = interactions_from_events(events)
    assert list(zip(back["user_id"], back["item_id"], back["timestamp_ms"], strict=True)) == [
        ("u", "b", 15),
        ("u", "a", 20),
    ]
    assert pd.isna(back["rating"][0]) and back["rating"][1] == 4.5
