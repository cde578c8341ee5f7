"""The candidate-recall benchmark with ``tune_plan`` on the shipped MovieLens sample and Milvus Lite."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.retrieval_measures import candidate_recall, plan_grid
from interactions.movielens import load_movielens


def test_plan_is_chosen_on_validation_items_and_reported_on_the_held_out_ones(tmp_path: Path):
    # Random vectors for the 500 most-rated items stand in for PPMI-SVD over the whole catalogue
    # (building and indexing that dominates the run time): the test is about the two splits and
    # the plan choice, not about ANN quality.
    ratings = load_movielens("ml-latest-small", None).ratings
    items = sorted(ratings["item_id"].value_counts().index[:500])
    vectors = np.random.default_rng(0).standard_normal((len(items), 16)).astype(np.float32)
    figures = candidate_recall(
        "ml-latest-small",
        None,
        str(tmp_path / "recall.db"),
        max_users=40,
        with_content=False,
        tune_plan=True,
        item_embeddings=(items, vectors),
    )
    assert figures.users == 40
    assert figures.plans_compared == len(plan_grid())
    without_content = [{n: s for n, s in p.items() if n != "content"} for p in plan_grid()]
    assert figures.plan in without_content
    assert set(figures.per_source) == {"ann", "cooccurrence", "popular", "fresh"}
    assert figures.validation_merged is not None and 0.0 <= figures.validation_merged <= 1.0
    assert 0.0 <= figures.merged <= 1.0
    # co-occurrence finds some held-out items on this data; a split that leaked or lost the
    # histories would find none (or all)
    assert 0.0 < figures.per_source["cooccurrence"] < 1.0
