"""Explanations: which history item drives a recommendation, and how each source is worded."""

from __future__ import annotations

import doctest

import numpy as np

import serving.explain
from serving.explain import RECENT_HISTORY, SlateExplainer

TITLES = {"heat": "Heat (1995)"}


def reference_driving_item(item_id, history, vectors):
    """The per-pair definition the vectorised ``SlateExplainer`` must agree with."""
    recent = list(history[-RECENT_HISTORY:])
    if not recent:
        return None
    target = None if vectors is None else vectors.get(item_id)
    if target is None:
        return recent[-1]
    best, best_similarity = recent[-1], -np.inf
    target_norm = float(np.linalg.norm(target)) or 1.0
    for candidate in reversed(recent):  # ties go to the most recent
        vector = vectors.get(candidate) if vectors is not None else None
        if vector is None:
            continue
        similarity = float(vector @ target) / ((float(np.linalg.norm(vector)) or 1.0) * target_norm)
        if similarity > best_similarity:
            best, best_similarity = candidate, similarity
    return best


def test_the_driving_item_is_the_most_similar_history_item():
    vectors = {
        "heat": np.array([1.0, 0.0]),
        "toy_story": np.array([0.0, 1.0]),
        "casino": np.array([0.9, 0.1]),
    }
    assert SlateExplainer(vectors).driving_items(["casino"], ["heat", "toy_story"]) == ["heat"]


def test_without_vectors_the_latest_history_item_drives():
    assert SlateExplainer(None).driving_items(["x", "y"], ["a", "b", "c"]) == ["c", "c"]
    assert SlateExplainer(None).driving_items(["x"], []) == [None]


def test_explanations_name_the_title_of_the_driving_item():
    explainer = SlateExplainer(None)
    slate = [("casino", "ann"), ("casino", "content"), ("x", "popular"), ("x", "explore")]
    assert explainer.explain_slate(slate, ["heat"], TITLES) == [
        "because you watched Heat (1995)",
        "new, similar to Heat (1995)",
        "trending now",
        "something new for you",
    ]
    cold = [("x", "fresh"), ("x", "ann"), ("x", "content")]
    assert explainer.explain_slate(cold, [], TITLES) == [
        "new",
        "popular with viewers like you",
        "new",
    ]
    assert explainer.explain_slate([("x", "cooccurrence")], ["m9"], TITLES) == [
        "because you watched m9"  # no title: the id
    ]


def test_the_vectorised_driving_items_agree_with_the_per_pair_definition():
    rng = np.random.default_rng(0)
    vectors = {f"m{n}": rng.normal(size=8).astype(np.float32) for n in range(60)}
    vectors["twin"] = vectors["m3"].copy()  # an exact tie: the most recent must win
    vectors["zero"] = np.zeros(8, dtype=np.float32)
    explainer = SlateExplainer(vectors)
    histories = [
        [],
        ["unknown"],
        ["m3", "m5", "twin", "m7"],
        [f"m{n}" for n in range(0, 60, 2)] + ["zero", "unknown"],
        [f"m{n}" for n in range(60)],  # longer than the recent window
    ]
    items = ["m1", "m3", "m11", "zero", "unknown", "twin"]
    for history in histories:
        expected = [reference_driving_item(i, history, vectors) for i in items]
        assert explainer.driving_items(items, history) == expected


def test_the_docstring_examples_run():
    result = doctest.testmod(serving.explain)
    assert result.attempted > 0 and result.failed == 0
