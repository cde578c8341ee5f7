"""river detectors behind the wrapper: latching, estimates, and state that survives bytes."""

from __future__ import annotations

import json
import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from monitoring import Detector, DetectorKind, DetectorSpec

ADWIN = DetectorSpec(DetectorKind.ADWIN, delta=0.002)
PAGE_HINKLEY = DetectorSpec(
    DetectorKind.PAGE_HINKLEY, delta=0.01, threshold=1.0, min_instances=10, mode="up"
)


def bernoulli(p: float, n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [1.0 if rng.random() < p else 0.0 for _ in range(n)]


def test_adwin_reports_a_ctr_drop_once_with_the_means_before_and_after():
    detector = Detector(ADWIN)
    values = bernoulli(0.3, 3_000, 1) + bernoulli(0.05, 3_000, 2)
    changes = [(i, c) for i, x in enumerate(values) if (c := detector.update(x)) is not None]
    assert changes, "a 30 % → 5 % drop must be detected"
    first_at, first = changes[0]
    assert 3_000 <= first_at < 3_500
    assert first.reference > 0.25 and first.statistic < first.reference
    assert detector.detections == len(changes)
    assert detector.updates == len(values)


def test_page_hinkley_fires_on_a_jump_and_records_its_peak_statistic():
    detector = Detector(PAGE_HINKLEY)
    quiet = [0.1 + 0.01 * (i % 3) for i in range(50)]
    assert all(detector.update(x) is None for x in quiet)
    assert 0 < detector.peak < 1.0
    change = next(c for x in [0.9] * 5 if (c := detector.update(x)) is not None)
    assert change.statistic == 0.9
    assert math.isclose(change.reference, 0.11, abs_tol=0.05)


def test_an_infinite_threshold_never_fires_but_still_measures_the_peak():
    detector = Detector(DetectorSpec(DetectorKind.PAGE_HINKLEY, delta=0.0, min_instances=1))
    assert all(detector.update(float(i)) is None for i in range(100))
    assert detector.peak > 10


def test_a_detector_whose_parameters_changed_restarts_empty():
    detector = Detector(ADWIN)
    for x in bernoulli(0.5, 100, 0):
        detector.update(x)
    restored = Detector.from_dict(DetectorSpec(DetectorKind.ADWIN, delta=0.01), detector.to_dict())
    assert restored.updates == 0 and restored.estimate == 0.0


@settings(max_examples=30, deadline=None)
@given(
    st.sampled_from([ADWIN, PAGE_HINKLEY]),
    st.integers(0, 10_000),
    st.integers(0, 2_000),
    st.floats(0.01, 0.6),
)
def test_state_round_trip_through_json_continues_exactly(spec, seed, cut, p):
    values = bernoulli(0.4, 1_500, seed) + bernoulli(p, 1_500, seed + 1)
    straight = Detector(spec)
    resumed = Detector(spec)
    seen_straight, seen_resumed = [], []
    for i, x in enumerate(values):
        if i == cut:  # the worker stores the state and a new process loads it
            resumed = Detector.from_dict(spec, json.loads(json.dumps(resumed.to_dict())))
        a, b = straight.update(x), resumed.update(x)
        seen_straight.append(None if a is None else (a.statistic, a.reference))
        seen_resumed.append(None if b is None else (b.statistic, b.reference))
    assert seen_resumed == seen_straight
    assert resumed.to_dict() == straight.to_dict()
    assert resumed.estimate == straight.estimate
