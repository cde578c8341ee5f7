"""The candidate-recall benchmark's split and plan choice (pure parts, no Milvus)."""

from __future__ import annotations

import pandas as pd

from benchmarks.retrieval_measures import (
    DEFAULT_PLAN,
    _SourceLists,
    _split,
    merged_recall,
    plan_grid,
)
from retrieval.sources import Candidate, Exclusions


def _events() -> pd.DataFrame:
    rows = [
        ("u1", "a", 1), ("u1", "b", 2), ("u1", "c", 3), ("u1", "d", 4),
        ("u2", "b", 1), ("u2", "e", 5), ("u2", "a", 9),
    ]  # fmt: skip
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp_ms"])
    return frame.sort_values(["user_id", "timestamp_ms", "item_id"], kind="stable")


def test_validation_split_targets_the_second_to_last_item_and_hides_the_last_two():
    split = _split(_events(), held_out=2)
    assert split.targets == {"u1": ("c", 3), "u2": ("e", 5)}
    assert split.histories == {"u1": ("a", "b"), "u2": ("b",)}
    # the sources are built from the history only: neither held-out item is in the training part
    assert set(split.train["item_id"][split.train["user_id"] == "u1"]) == {"a", "b"}
    assert not (split.train["timestamp_ms"] >= 5).any()


def test_test_split_targets_the_last_item_with_everything_before_it():
    split = _split(_events(), held_out=1)
    assert split.targets == {"u1": ("d", 4), "u2": ("a", 9)}
    assert split.histories == {"u1": ("a", "b", "c"), "u2": ("b", "e")}


def test_plan_grid_starts_with_the_base_plan_and_has_no_duplicates():
    grid = plan_grid()
    assert grid[0] == DEFAULT_PLAN
    assert len({tuple(sorted(p.items())) for p in grid}) == len(grid)
    assert all(set(p) == set(DEFAULT_PLAN) for p in grid)


def _candidates(source: str, items: str) -> list[Candidate]:
    return [Candidate(item, 1.0 / (n + 1), source) for n, item in enumerate(items)]


def test_merged_recall_follows_the_plan_slots():
    # k = 2: the target "z" is ann's 3rd item; co-occurrence's first two items fill the slots
    # unless ann reserves enough slots (or weighs enough) to place it.
    answers = _SourceLists(
        lists={"u": {"ann": _candidates("ann", "xyz"), "cooccurrence": _candidates("co", "pq")}},
        exclusions={"u": Exclusions(seen=frozenset({"x", "y"}))},
        targets={"u": "z"},
        cold_targets=0,
    )
    starved = {"ann": (0, 1.0), "cooccurrence": (200, 1.0)}
    reserved = {"ann": (100, 1.0), "cooccurrence": (0, 1.0)}
    assert merged_recall(answers, starved, k=2) == 0.0
    # "x" and "y" are seen (ineligible), so "z" is ann's first eligible item and takes its slot
    assert merged_recall(answers, reserved, k=2) == 1.0
