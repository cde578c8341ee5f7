"""``benchmarks.live_replay.plan_requests`` and the live figures' scoring: which ratings become
requests, with what point-in-time history, and how a served slate is scored."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given
from hypothesis import strategies as st

from benchmarks.live_figures import later_requests, slate_ranks, user_mean_ci
from benchmarks.live_replay import (
    Answer,
    Request,
    Served,
    events_per_rating,
    plan_requests,
    popular_excludes,
)
from interactions.replay import rating_events

ratings_strategy = st.lists(
    st.tuples(
        st.sampled_from([f"u{i}" for i in range(6)]),
        st.sampled_from([f"i{i}" for i in range(12)]),
        st.integers(0, 40),  # event time, coarse: ties are common
        st.sampled_from([1.0, 2.0, 3.0, 4.0, 5.0]),
    ),
    min_size=1,
    max_size=80,
)


def frame(rows: list[tuple[str, str, int, float]]) -> pd.DataFrame:
    """The loader's contract: one rating per (user, item), ordered by (time, user, item)."""
    ratings = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp_ms", "rating"])
    ratings = ratings.drop_duplicates(["user_id", "item_id"])
    return ratings.sort_values(["timestamp_ms", "user_id", "item_id"]).reset_index(drop=True)


@given(ratings_strategy, st.integers(0, 40), st.integers(1, 6), st.integers(1, 4))
def test_requests_are_point_in_time_and_capped(
    rows: list[tuple[str, str, int, float]], cutoff: int, users: int, per_user: int
) -> None:
    ratings = frame(rows)
    future, requests = plan_requests(
        ratings, cutoff, users=users, events_per_user=per_user, min_history=1, seed=1
    )
    assert (future["timestamp_ms"] >= cutoff).all()
    assert len(future) == int((ratings["timestamp_ms"] >= cutoff).sum())
    assert [r.position for r in requests] == sorted({r.position for r in requests})
    chosen = {r.user_id for r in requests}
    assert len(chosen) <= users
    for request in requests:
        row = future.iloc[request.position]
        assert (row["user_id"], row["item_id"]) == (request.user_id, request.item_id)
        assert request.event_time_ms == row["timestamp_ms"] >= cutoff
        # The history is every rating of the user before this one, in the loader's order.
        mine = ratings[ratings["user_id"] == request.user_id].reset_index(drop=True)
        at = mine.index[mine["item_id"] == request.item_id][0]
        earlier = mine.iloc[:at].sort_values(["timestamp_ms", "item_id"], kind="stable")
        assert request.history == tuple(earlier["item_id"])
        assert request.item_id not in request.history
        assert len(mine[mine["timestamp_ms"] < cutoff]) >= 1  # warm at T
    for user in chosen:
        assert sum(r.user_id == user for r in requests) <= per_user


@given(ratings_strategy)
def test_events_per_rating_matches_the_replay_mapping(
    rows: list[tuple[str, str, int, float]],
) -> None:
    ratings = frame(rows)
    assert sum(events_per_rating(ratings)) == len(list(rating_events("t", ratings)))


def served(user: str, target: str, slates: dict[str, tuple[str, ...]]) -> Served:
    request = Request(0, user, target, 0, ("a",))
    answers = {arm: Answer(items, 1.0, False) for arm, items in slates.items()}
    return Served(request, answers, 0.0, ("a",), (), True)


def test_a_slate_scores_the_targets_position_or_a_miss() -> None:
    log = [
        served("u1", "x", {"live": ("x", "y"), "frozen": ("y", "x")}),
        served("u2", "z", {"live": ("x", "y"), "frozen": ("z",)}),
    ]
    assert slate_ranks(log, "live").tolist() == [1, 11]
    assert slate_ranks(log, "frozen").tolist() == [2, 1]


def test_user_resampled_interval_holds_the_mean() -> None:
    values = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 0.0])
    users = ["a", "a", "b", "b", "c", "d"]
    low, high = user_mean_ci(values, users, seed=0)
    assert 0.0 <= low <= values.mean() <= high <= 1.0


def test_popular_arm_excludes_the_newest_rated_items_first() -> None:
    request = Request(0, "u", "t", 0, ("a", "b", "c"))
    assert popular_excludes(request, 2) == ["c", "b"]


def test_only_a_users_second_and_later_requests_count_as_later() -> None:
    log = [served(u, "x", {"live": ()}) for u in ("a", "b", "a", "a", "c", "b")]
    assert later_requests(log) == [False, False, True, True, False, True]
