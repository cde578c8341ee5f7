"""Exposure statistics: popularity buckets, Jensen–Shannon distance, Gini, the sliding window."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from monitoring.exposure import ExposureWindow, PopularityReference, gini, js_distance


def test_buckets_hold_about_equal_reference_exposure_and_unknown_items_go_last():
    counts = {f"i{k}": 1000 // k for k in range(1, 400)}  # Zipf-like
    reference = PopularityReference.from_counts(counts, buckets=10)
    assert reference.bucket_of["i1"] == 0  # the head item opens the first bucket
    assert math.isclose(sum(reference.shares), 1.0)
    assert max(reference.shares) < 0.2
    assert reference.bucket_of["i399"] == 9
    assert PopularityReference.from_dict(reference.to_dict()) == reference


def test_bucketing_is_deterministic_under_ties_and_capped():
    counts = {"b": 5, "a": 5, "c": 5, "d": 1}
    reference = PopularityReference.from_counts(counts, buckets=4, max_items=2)
    assert dict(reference.bucket_of) == {"a": 0, "b": 1}  # ties by item id; c, d beyond the cap
    assert reference.shares[-1] == pytest.approx(6 / 16)


def test_js_distance_bounds():
    assert js_distance([1, 2, 3], [2, 4, 6]) == 0.0
    assert js_distance([1, 0], [0, 1]) == pytest.approx(1.0)
    assert js_distance([3, 1], [1, 3]) == pytest.approx(js_distance([1, 3], [3, 1]))
    assert js_distance([0, 0], [1, 1]) == 0.0


def test_gini_of_equal_and_of_concentrated_exposure():
    assert gini([5, 5, 5, 5]) == pytest.approx(0.0)
    assert gini([10], population=10) == pytest.approx(0.9)
    assert gini([]) == 0.0


def test_the_window_learns_a_reference_then_reports_every_hop_over_a_fixed_number_of_slots():
    window = ExposureWindow(
        block_slots=200,
        hop_slots=50,
        reference_slots=1_000,
        buckets=10,
        max_reference_items=10_000,
        catalogue_size=500,
    )
    rng = random.Random(0)
    weights = [1 / k for k in range(1, 501)]
    same = rng.choices(range(500), weights, k=3_000)
    stats = [s for item in same if (s := window.add(f"i{item}")) is not None]
    assert len(stats) == (3_000 - 1_000) // 50 - 3  # the first full block after 4 hops
    js, g, coverage = stats[-1]
    assert js < 0.2 and 0 < g < 1 and 0 < coverage <= 200 / 500
    # A head-heavy regime is far from the reference.
    head = [s for _ in range(200) if (s := window.add("i0")) is not None]
    assert head[-1][0] > 0.5
    window.relearn()
    assert window.reference is None and window.add("i1") is None


def test_the_window_state_round_trips():
    window = ExposureWindow(40, 20, 60, 10, 100, None)
    for k in range(150):
        window.add(f"i{k % 7}")
    other = ExposureWindow(40, 20, 60, 10, 100, None)
    other.load(window.to_dict())
    assert other.to_dict() == window.to_dict()
    assert [other.add(f"i{k}") for k in range(40)] == [window.add(f"i{k}") for k in range(40)]
    assert Counter(other.current) == Counter(window.current)
