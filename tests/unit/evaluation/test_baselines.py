"""Baselines: recent popularity, item-to-item transition, EASE; and the ranking protocol."""

from __future__ import annotations

import numpy as np
import pandas as pd

from evaluation.baselines import EASE, CatalogueIndex, ItemTransition, RecentPopular
from evaluation.protocol import MemoScorer, PopularityPriorBlend, rank_requests
from interactions.sequences import EvalCase
from ranker.scoring import UNKNOWN_ITEM_SCORE

DAY = 86_400_000


def test_recent_popular_counts_only_the_window_before_the_cutoff() -> None:
    catalogue = CatalogueIndex(["a", "b", "c"])
    events = pd.DataFrame(
        {
            "user_id": ["u"] * 6,
            "item_id": ["a", "a", "a", "b", "b", "c"],
            "timestamp_ms": [0, 1, 2, 9 * DAY, 9 * DAY + 1, 20 * DAY],  # c is at/after the cut-off
        }
    )
    recent = RecentPopular.from_events(catalogue, events, cutoff_ms=10 * DAY, window_days=5)
    scores = recent.score_all([()])[0]
    assert scores.argmax() == 1  # b: 2 events in the window; a is older; c is in the future
    assert scores[2] < scores[0]  # c's event is after the cut-off: no count, not even as tie-break
    all_time = RecentPopular.from_events(catalogue, events, cutoff_ms=10 * DAY, window_days=None)
    assert all_time.score_all([()])[0].argmax() == 0


def test_transition_scores_follow_the_last_item() -> None:
    catalogue = CatalogueIndex(["a", "b", "c"])
    model = ItemTransition(catalogue, {"u": ["a", "b", "c"], "v": ["a", "b"], "w": ["b", "a"]})
    scores = model.score_all([("c", "a"), ("b",)])
    assert scores[0].argmax() == 1  # after a comes b (twice)
    assert abs(scores[1][0] - scores[1][2]) < 1e-3  # b -> a once, b -> c once: tied up to tie-break
    assert scores[1][0] > scores[1][1]  # b never follows b


def test_ease_recovers_item_co_occurrence() -> None:
    catalogue = CatalogueIndex(["a", "b", "c", "d"])
    sequences = {f"u{k}": ["a", "b"] for k in range(10)} | {f"v{k}": ["c", "d"] for k in range(10)}
    model = EASE(catalogue, sequences, l2=1.0)
    scores = model.score_all([("a",), ("c",)])
    assert scores[0, 1] > scores[0, 2:].max()
    assert scores[1, 3] > scores[1, :2].max()


def test_rank_requests_filters_seen_items_and_ranks_all_items() -> None:
    catalogue = CatalogueIndex(["a", "b", "c", "d"])

    class Fixed:
        def score_all(self, histories):  # a > b > c > d for everybody
            return np.tile(np.array([4.0, 3.0, 2.0, 1.0]), (len(histories), 1))

    cases = [EvalCase("u", ("a",), "b"), EvalCase("v", (), "d"), EvalCase("w", ("a", "b"), "zzz")]
    ranked = rank_requests(Fixed(), cases, catalogue)
    assert ranked.ranks.tolist() == [
        1,
        4,
        5,
    ]  # seen "a" no longer outranks "b"; unknown target misses
    assert ranked.top[0][:3].tolist() == [1, 2, 3]  # "a" (seen) is not recommended first


class CountingScorer:
    """Scores = a fixed row; counts how many histories it was asked about."""

    def __init__(self, row: list[float]) -> None:
        self.row, self.asked = np.array(row), 0

    def score_all(self, histories):  # type: ignore[no-untyped-def]
        self.asked += len(histories)
        return np.tile(self.row, (len(histories), 1))


def test_memo_scorer_asks_once_per_distinct_history() -> None:
    inner = CountingScorer([1.0, 2.0])
    memo = MemoScorer(inner)
    first = memo.score_all([("a",), ("b",), ("a",)])
    second = memo.score_all([("b",)])
    assert inner.asked == 2
    np.testing.assert_array_equal(first[0], second[0])


def test_popularity_prior_blend_reorders_by_beta_and_keeps_unknown_items_low() -> None:
    model = CountingScorer([2.0, 1.0, UNKNOWN_ITEM_SCORE])  # the model prefers item 0
    counts = np.array([0.0, 100.0, 1000.0])  # item 1 is popular now; item 2 unknown to the model
    plain = PopularityPriorBlend(model, counts, beta=0.0).score_all([()])[0]
    assert plain.argmax() == 0 and plain[2] == UNKNOWN_ITEM_SCORE
    np.testing.assert_allclose(np.exp(plain[:2]).sum(), 1.0)  # log-softmax over known items
    blended = PopularityPriorBlend(model, counts, beta=1.0).score_all([()])[0]
    assert blended.argmax() == 1 and blended[2] == UNKNOWN_ITEM_SCORE
