"""Data pipeline: event-time ordering, literature filtering, leave-one-out and temporal splits,
point-in-time training pairs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from ranker_synthetic import synthetic_ratings

from core.errors import SchemaError
from interactions.sequences import (
    SPLIT_KINDS,
    filter_rare_items,
    leave_one_out,
    split_of_kind,
    temporal_refit_split,
    temporal_split,
    user_sequences,
)
from ranker.data import ItemVocabulary, build_training_tensors
from ranker.model import PAD


def frame(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp_ms"]).assign(rating=1.0)


def test_sequences_are_time_ordered_and_ties_broken_by_item_id() -> None:
    ratings = frame([("u", "b", 5), ("u", "a", 5), ("u", "c", 1), ("v", "x", 2)])
    assert user_sequences(ratings) == {"u": ["c", "a", "b"], "v": ["x"]}


def test_filter_rare_items_drops_items_below_min_count() -> None:
    rows = [(f"u{k}", "popular", k) for k in range(5)] + [("u0", "rare", 9)] * 4
    kept = filter_rare_items(frame(rows), min_count=5)
    assert set(kept["item_id"]) == {"popular"}


def test_leave_one_out_uses_last_for_test_second_last_for_validation() -> None:
    ratings = frame(
        [("u", f"i{k}", k) for k in range(6)] + [("short", "i0", 1), ("short", "i1", 2)]
    )
    split = leave_one_out(ratings)
    assert split.train["u"] == ["i0", "i1", "i2", "i3"]
    (val,) = [c for c in split.validation if c.user_id == "u"]
    (test,) = [c for c in split.test if c.user_id == "u"]
    assert (val.history, val.target) == (("i0", "i1", "i2", "i3"), "i4")
    assert (test.history, test.target) == (("i0", "i1", "i2", "i3", "i4"), "i5")
    assert split.train["short"] == ["i0", "i1"]  # too short to hold out anything
    assert all(c.user_id != "short" for c in split.test)


@settings(max_examples=40, deadline=None)
@given(
    events=st.lists(
        st.tuples(st.integers(0, 6), st.integers(0, 15), st.integers(0, 1000)),
        min_size=8,
        max_size=80,
    )
)
def test_temporal_split_is_point_in_time(events: list[tuple[int, int, int]]) -> None:
    ratings = frame([(f"u{u}", f"i{i}", t) for u, i, t in events])
    ratings = ratings.sort_values(["timestamp_ms", "user_id", "item_id"]).reset_index(drop=True)
    try:
        every = temporal_split(ratings, quantile=0.7, validation_quantile=0.7)
        first = temporal_split(ratings, quantile=0.7, validation_quantile=0.7, requests="first")
    except SchemaError:  # every event at one time: there is no past to split off
        assume(False)
        return
    t, t_val = every.cutoff_ms, every.validation_cutoff_ms
    assert t is not None and t_val is not None and t_val <= t
    assert (first.cutoff_ms, first.validation_cutoff_ms, first.train) == (t, t_val, every.train)
    when = {}
    for row in ratings.itertuples():
        when.setdefault((row.user_id, row.item_id), []).append(row.timestamp_ms)
    for user, seq in every.train.items():  # training data: only events before T_val
        assert all(min(when[(user, i)]) < t_val for i in seq)
    for cases, (start, end) in ((every.validation, (t_val, t)), (every.test, (t, None))):
        for case in cases:  # history: what was known when the target happened, nothing later
            times = when[(case.user_id, case.target)]
            in_window = [x for x in times if x >= start and (end is None or x < end)]
            assert in_window  # the target happened in the request's window
            assert all(min(when[(case.user_id, i)]) <= max(in_window) for i in case.history)
            assert case.target not in case.history
    for cases, start in ((first.validation, t_val), (first.test, t)):
        assert len({c.user_id for c in cases}) == len(cases)  # one request per user
        for case in cases:  # history: only what was known at the window's start
            assert all(min(when[(case.user_id, i)]) < start for i in case.history)
            assert max(when[(case.user_id, case.target)]) >= start
            assert case.target not in case.history


def test_temporal_refit_trains_on_everything_before_t_and_nothing_after() -> None:
    ratings = frame(
        [("u", "a", 1), ("u", "b", 2), ("v", "x", 3), ("u", "c", 6), ("u", "d", 11), ("v", "y", 12)]
    )
    temporal = temporal_split(ratings, quantile=0.6, validation_quantile=0.5)
    assert (temporal.validation_cutoff_ms, temporal.cutoff_ms) == (2, 6)
    refit = temporal_refit_split(ratings, temporal)
    assert refit.name == "temporal-refit" and refit.validation == []
    assert refit.train == {"u": ["a", "b"], "v": ["x"]}  # before T = 6: "c" (at T) is test data
    assert temporal.train == {"u": ["a"]}  # before T_val only
    assert refit.test == temporal.test and refit.items == temporal.items
    assert (refit.cutoff_ms, refit.validation_cutoff_ms) == (6, 2)


# Two users before and after T = 10 (the median event time), and one who arrives after it.
TIMELINE = [
    ("u", "a", 1),
    ("u", "b", 2),
    ("v", "x", 3),
    ("u", "c", 10),
    ("u", "d", 11),
    ("v", "y", 12),
    ("w", "z", 13),
]


def test_every_event_after_the_cutoff_is_a_request_with_its_point_in_time_history() -> None:
    split = temporal_split(frame(TIMELINE), quantile=0.5, validation_quantile=0.5)
    assert split.cutoff_ms == 10 and split.temporal_requests == "every"
    assert [(c.user_id, c.history, c.target) for c in split.test] == [
        ("u", ("a", "b"), "c"),
        ("u", ("a", "b", "c"), "d"),  # "c" happened after T but before "d": serving knows it
        ("v", ("x",), "y"),
        ("w", (), "z"),  # a cold-start user: nothing before the request
    ]


def test_validation_requests_are_a_seeded_sample_in_order() -> None:
    ratings = synthetic_ratings(n_users=30, n_items=40, length=12, seed=5)
    full = temporal_split(ratings, max_validation_requests=None).validation
    sample = temporal_split(ratings, max_validation_requests=7).validation
    assert len(full) > 7 and len(sample) == 7
    positions = [full.index(c) for c in sample]
    assert positions == sorted(positions)  # a subset, original order kept
    assert temporal_split(ratings, max_validation_requests=7).validation == sample


def test_unknown_request_kind_is_a_clear_error() -> None:
    with pytest.raises(SchemaError, match="first"):
        temporal_split(synthetic_ratings(), requests="all")


def test_temporal_test_target_is_first_new_item_after_cutoff() -> None:
    split = temporal_split(frame(TIMELINE), quantile=0.5, validation_quantile=0.5, requests="first")
    assert split.cutoff_ms == 10
    by_user = {c.user_id: c for c in split.test}
    assert (by_user["u"].history, by_user["u"].target) == (("a", "b"), "c")
    assert (by_user["v"].history, by_user["v"].target) == (("x",), "y")
    assert by_user["w"].history == ()  # a cold-start user: nothing before T


def test_training_pairs_label_each_position_with_the_next_event_only() -> None:
    ratings = synthetic_ratings(n_users=12, n_items=30, length=9, seed=3)
    sequences = user_sequences(ratings)
    vocab = ItemVocabulary.from_sequences(sequences.values())
    tensors = build_training_tensors(sequences, vocab, max_length=6)
    for row, user in enumerate(sorted(sequences)):
        encoded = vocab.encode(sequences[user])
        inputs, targets = tensors.inputs[row], tensors.targets[row]
        # the newest label is the last event; every label is the event right after its input
        assert targets[-1] == encoded[-1]
        assert list(inputs) == encoded[-7:-1]
        assert list(targets) == encoded[-6:]
        # no input position ever holds the label it (or any earlier position) predicts
        for t in range(6):
            assert targets[t] not in inputs[: t + 1] or targets[t] == PAD


def test_short_sequences_are_left_padded() -> None:
    vocab = ItemVocabulary(("a", "b", "c"))
    tensors = build_training_tensors({"u": ["a", "b", "c"]}, vocab, max_length=4)
    np.testing.assert_array_equal(tensors.inputs[0], [PAD, PAD, 1, 2])
    np.testing.assert_array_equal(tensors.targets[0], [PAD, PAD, 2, 3])


def test_a_split_kind_builds_the_split_of_that_name() -> None:
    ratings = filter_rare_items(synthetic_ratings(n_users=20))
    assert split_of_kind(ratings, "loo") == leave_one_out(ratings)
    temporal = temporal_split(ratings, requests="first")
    assert split_of_kind(ratings, "temporal", "first") == temporal
    assert split_of_kind(ratings, "temporal-refit", "first") == temporal_refit_split(
        ratings, temporal
    )
    for kind, name in SPLIT_KINDS.items():  # what a checkpoint records for each kind
        assert split_of_kind(ratings, kind).name == name
    with pytest.raises(SchemaError, match="unknown split"):
        split_of_kind(ratings, "random")
