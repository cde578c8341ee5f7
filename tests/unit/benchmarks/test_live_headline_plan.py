"""The demo's live-vs-frozen headline (``benchmarks.live_headline``) and the demo's closed loop
around it (``aether.demo``, ``aether.demo_loop``): the headline never replays a closed-loop user's ratings, never a
title outside the catalogue at the cut-off, and the loop's events, which come after the replay,
are never late against the worker's watermarks."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aether.demo_loop import closed_loop_users, feedback_events, loop_start_ms
from benchmarks.live_headline import frozen_settings, headline_line, headline_plan
from core.settings import Settings
from streams.eventtime import Lateness, Verdict, advance, judge

USERS = [f"u{i}" for i in range(8)]
ITEMS = [f"i{i}" for i in range(10)]
HOUR_MS = 3_600_000

ratings_strategy = st.lists(
    st.tuples(
        st.sampled_from(USERS),
        st.sampled_from(ITEMS),
        st.integers(0, 60),
        st.sampled_from([1.0, 3.0, 4.0, 5.0]),
    ),
    min_size=1,
    max_size=150,
)


def frame(rows: list[tuple[str, str, int, float]]) -> pd.DataFrame:
    """The loader's contract: one rating per (user, item), in event-time order."""
    ratings = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp_ms", "rating"])
    ratings = ratings.drop_duplicates(["user_id", "item_id"])
    return ratings.sort_values(["timestamp_ms", "user_id", "item_id"]).reset_index(drop=True)


@given(
    ratings_strategy,
    st.integers(0, 60),
    st.sets(st.sampled_from(USERS), max_size=4),
    st.sets(st.sampled_from(ITEMS), min_size=1),
    st.integers(1, 4),
)
def test_the_headline_replays_no_loop_user_and_no_title_outside_the_catalogue(
    rows: list[tuple[str, str, int, float]],
    cutoff: int,
    loop: set[str],
    catalogue: set[str],
    per_user: int,
) -> None:
    ratings = frame(rows)
    future, requests = headline_plan(
        ratings, cutoff, catalogue=catalogue, loop_users=loop, events_per_user=per_user
    )
    assert not set(future["user_id"]) & loop
    assert set(future["item_id"]) <= catalogue
    assert (future["timestamp_ms"] >= cutoff).all()
    assert not {r.user_id for r in requests} & loop
    for request in requests:
        row = future.iloc[request.position]
        assert (row["user_id"], row["item_id"]) == (request.user_id, request.item_id)
    # The replay ends with the last request: nothing after it is published.
    assert len(future) == (requests[-1].position + 1 if requests else 0)
    counts = pd.Series([r.user_id for r in requests]).value_counts()
    assert (counts <= per_user).all()


def test_every_warm_user_outside_the_loop_is_asked() -> None:
    # Users a and b are warm at the cut-off (5 ratings before it), b is in the loop; x9 is a
    # title outside the catalogue at the cut-off; a cold user rates after a's last request.
    rows = [(u, f"i{n}", n, 4.0) for u in ("a", "b", "c", "d", "e") for n in range(5)]
    rows += [("b", "i6", 5, 4.0), ("c", "x9", 9, 5.0), ("b", "x9", 10, 5.0)]
    rows += [("a", "i5", 10, 5.0), ("b", "i5", 11, 5.0), ("a", "i6", 11, 2.0)]
    rows += [("cold", "i5", 12, 3.0)] + [(u, f"i{n}", 3, 4.0) for u in "cde" for n in (5, 6)]
    ratings = frame(rows)
    catalogue = {f"i{n}" for n in range(10)}
    future, requests = headline_plan(
        ratings, 9, catalogue=catalogue, loop_users={"b"}, events_per_user=3
    )
    assert [(r.user_id, r.item_id) for r in requests] == [("a", "i5"), ("a", "i6")]
    assert requests[1].history == ("i0", "i1", "i2", "i3", "i4", "i5")
    # b's ratings are the loop's, x9 is not in the catalogue, the cold rating comes after a's last.
    assert list(zip(future["user_id"], future["item_id"], strict=True)) == [
        ("a", "i5"),
        ("a", "i6"),
    ]


def test_loop_users_are_a_seeded_sample_of_users_with_five_likes() -> None:
    liked = {f"u{i}": {f"i{j}" for j in range(i)} for i in range(10)}  # u5…u9: five likes or more
    known = {f"u{i}" for i in range(9)}  # u9 was not seen before the cut-off
    users = closed_loop_users(liked, known, 3, seed=0)
    assert len(users) == 3 and set(users) <= {"u5", "u6", "u7", "u8"}
    assert users == closed_loop_users(liked, known, 3, seed=0)
    assert closed_loop_users(liked, known, 40, seed=0) == ["u5", "u6", "u7", "u8"]


@given(
    st.integers(10**12, 2 * 10**12),  # event times from 2001 to 2033
    st.lists(st.integers(10**12, 2 * 10**12), max_size=30),
    st.integers(1, 6),
    st.integers(0, 60_000),
)
def test_the_loop_after_the_replay_is_never_late(
    cutoff: int, replayed: list[int], rounds: int, allowed_lateness: int
) -> None:
    """Whatever the replay published (on any partition), each round's feedback events, stamped
    from ``loop_start_ms``, are admitted by the worker's lateness rule."""
    policy = Lateness(allowed_lateness_ms=allowed_lateness)
    watermark = None
    for t in [cutoff - 1, *replayed]:  # the past, then the headline's replay
        watermark = advance(watermark, t)
    start = loop_start_ms(cutoff, max(replayed) if replayed else None)
    assert start >= cutoff
    for round_no in range(1, rounds + 1):
        events, _, _ = feedback_events(
            "u", [f"i{n}" for n in range(10)], f"r{round_no}", {"i1"}, {"i2"},
            start + round_no * HOUR_MS, broken_client=round_no == 2,
        )  # fmt: skip
        for event in events:
            event_ms = int(event.event_time.timestamp() * 1000)
            assert judge(watermark, event_ms, policy) is Verdict.APPLY
            watermark = advance(watermark, event_ms)


def test_frozen_namespace() -> None:
    settings = Settings(namespace="demo")
    assert frozen_settings(settings).namespace == "demo_frozen"
    assert frozen_settings(settings).topic("events") == "demo_frozen.events"
    with pytest.raises(ValueError, match="namespace"):
        frozen_settings(Settings(namespace="n" * 30))


def figures(gain: float) -> dict[str, float]:
    return {
        "live_users": 15,
        "live_requests": 42,
        "live_ndcg10": 0.05,
        "frozen_ndcg10": 0.03,
        "popular_ndcg10": 0.02,
        "live_gain_over_frozen": gain,
        "live_gain_over_frozen_ci95_low": gain - 0.5,
        "live_gain_over_frozen_ci95_high": gain + 1.0,
    }


def test_the_headline_line_says_it_is_a_small_sample() -> None:
    line = headline_line("ml-latest-small", figures(0.667))
    assert "SMALL SAMPLE (15 users, 42 requests" in line
    assert "NDCG@10 live 0.050 / frozen 0.030 / popular 0.020" in line
    assert "live over frozen +67% (95 % CI +17% … +167%)" in line
    assert "undefined" in headline_line("ml-latest-small", figures(math.nan))
