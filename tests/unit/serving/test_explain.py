import numpy as np

from serving.explain import driving_item, explain


def test_driving_item_is_the_most_similar_history_item():
    vectors = {
        "heat": np.array([1.0, 0.0]),
        "toy_story": np.array([0.0, 1.0]),
        "casino": np.array([0.9, 0.1]),
    }
    assert driving_item("casino", ["heat", "toy_story"], vectors) == "heat"


def test_without_vectors_the_latest_history_item_drives():
    assert driving_item("x", ["a", "b", "c"], None) == "c"


def test_explanations_name_the_title_of_the_driving_item():
    titles = {"heat": "Heat (1995)"}
    assert explain("casino", "ann", ["heat"], titles) == "because you watched Heat (1995)"
    assert explain("casino", "content", ["heat"], titles) == "new, similar to Heat (1995)"
    assert explain("x", "popular", ["heat"], titles) == "trending now"
    assert explain("x", "fresh", [], titles) == "new"
    assert explain("x", "ann", [], titles) == "popular with viewers like you"
