"""The time series store: scrape text → rounds → rates, ratios and quantiles as PromQL reads them."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from core.errors import SchemaError
from dashboard.scrape import parse_exposition
from dashboard.series import Round, ScrapeRing, densities, histogram_quantile

WORKER_TEXT = """\
# HELP aether_stream_events_by_type_total applied events
# TYPE aether_stream_events_by_type_total counter
aether_stream_events_by_type_total{{event_type="click"}} {click}
aether_stream_events_by_type_total{{event_type="view"}} {view}
# HELP aether_bandit_impressions_total slots
# TYPE aether_bandit_impressions_total counter
aether_bandit_impressions_total{{arm="a"}} {shown}
# HELP aether_bandit_rewards_total clicks
# TYPE aether_bandit_rewards_total counter
aether_bandit_rewards_total{{arm="a"}} {clicked}
"""


def worker_round(
    at: float, click: float, view: float, shown: float = 0, clicked: float = 0
) -> Round:
    text = WORKER_TEXT.format(click=click, view=view, shown=shown, clicked=clicked)
    return Round.of(at, {"worker": parse_exposition(text)})


def test_parse_keeps_the_exposed_sample_names_and_drops_created() -> None:
    registry = CollectorRegistry()
    Counter("aether_stream_events", "x", ["topic"], registry=registry).labels(topic="e").inc(3)
    Histogram("aether_recommend_seconds", "x", buckets=(0.01, 0.1), registry=registry).observe(0.05)
    samples = parse_exposition(generate_latest(registry).decode())

    assert samples[("aether_stream_events_total", (("topic", "e"),))] == 3.0
    assert samples[("aether_recommend_seconds_bucket", (("le", "0.01"),))] == 0.0
    assert samples[("aether_recommend_seconds_bucket", (("le", "0.1"),))] == 1.0
    assert samples[("aether_recommend_seconds_bucket", (("le", "+Inf"),))] == 1.0
    assert not [name for name, _ in samples if name.endswith("_created")]


def test_malformed_exposition_is_a_schema_error() -> None:
    with pytest.raises(SchemaError):
        parse_exposition('aether_x{le="0.1" 3\n')


def test_rates_between_successive_scrapes() -> None:
    ring = ScrapeRing()
    ring.add(worker_round(100.0, click=10, view=100))
    ring.add(worker_round(105.0, click=20, view=200))
    ring.add(worker_round(110.0, click=25, view=400))

    lines = ring.rate_history("aether_stream_events_by_type_total", "event_type")

    assert lines == {"click": [(105.0, 2.0), (110.0, 1.0)], "view": [(105.0, 20.0), (110.0, 40.0)]}
    assert ring.rate_now("aether_stream_events_by_type_total", window=2) == pytest.approx(
        (25 + 400 - 10 - 100) / 10
    )


def test_a_counter_that_drops_was_reset_by_a_restart() -> None:
    ring = ScrapeRing()
    ring.add(worker_round(0.0, click=50, view=0))
    ring.add(worker_round(10.0, click=5, view=0))  # the worker restarted and counted 5

    assert ring.increase_by("aether_stream_events_by_type_total", "event_type", 0, 1) == {
        "click": 5.0,
        "view": 0.0,
    }


def test_a_target_down_contributes_nothing_and_does_not_crash() -> None:
    ring = ScrapeRing()
    ring.add(worker_round(0.0, click=1, view=1))
    ring.add(Round.of(5.0, {"worker": None}))
    ring.add(worker_round(10.0, click=3, view=3))

    assert ring.rate_history("aether_stream_events_by_type_total", "event_type") == {}
    assert ring.latest("aether_stream_events_by_type_total") != {}
    assert ring.increase_by("aether_stream_events_by_type_total", "event_type", 0, 1) is None


def test_missing_series_give_empty_answers() -> None:
    ring = ScrapeRing()
    assert ring.rate_now("aether_nothing_total", 5) is None
    ring.add(worker_round(0.0, click=1, view=1))
    ring.add(worker_round(1.0, click=1, view=1))
    assert ring.rate_history("aether_nothing_total", "x") == {}
    assert ring.quantile_history("aether_recommend_seconds", 0.5, 3) == []
    assert ring.bucket_totals("aether_recommend_seconds", -1) is None


def test_ctr_per_arm_over_a_sliding_window() -> None:
    ring = ScrapeRing()
    ring.add(worker_round(0.0, 0, 0, shown=0, clicked=0))
    ring.add(worker_round(5.0, 0, 0, shown=1000, clicked=50))
    ring.add(worker_round(10.0, 0, 0, shown=2000, clicked=80))

    ratios = ring.ratio_history(
        "aether_bandit_rewards_total", "aether_bandit_impressions_total", "arm", window=1
    )

    assert ratios == {"a": [(5.0, 0.05), (10.0, 0.03)]}


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    buckets = [(0.1, 50.0), (0.5, 90.0), (1.0, 100.0), (math.inf, 100.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.7, buckets) == pytest.approx(0.1 + 0.4 * (70 - 50) / 40)
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.5 + 0.5 * 9 / 10)
    # a rank in the +Inf bucket answers the highest finite bound
    assert histogram_quantile(0.99, [(1.0, 10.0), (math.inf, 100.0)]) == 1.0
    assert histogram_quantile(0.5, []) is None
    assert histogram_quantile(0.5, [(1.0, 0.0), (math.inf, 0.0)]) is None


@given(
    st.lists(st.integers(min_value=0, max_value=1000), min_size=2, max_size=12),
    st.floats(min_value=0.0, max_value=1.0),
    st.floats(min_value=0.0, max_value=1.0),
)
def test_quantiles_are_monotonic_and_inside_the_bounds(
    counts: list[int], q1: float, q2: float
) -> None:
    bounds = [0.001 * 2**i for i in range(len(counts))]
    cumulative, total = [], 0
    for bound, count in zip(bounds, counts, strict=True):
        total += count
        cumulative.append((bound, float(total)))
    low, high = sorted((q1, q2))
    a, b = histogram_quantile(low, cumulative), histogram_quantile(high, cumulative)
    if total == 0:
        assert a is None and b is None
        return
    assert a is not None and b is not None
    assert 0.0 <= a <= b <= bounds[-1]


@given(st.lists(st.integers(min_value=0, max_value=1000), min_size=1, max_size=12))
def test_densities_sum_to_one(counts: list[int]) -> None:
    cumulative, total = [], 0
    for i, count in enumerate(counts):
        total += count
        cumulative.append((float(i), float(total)))
    shares = densities(cumulative)
    assert len(shares) == len(counts)
    assert sum(shares) == pytest.approx(1.0 if total else 0.0)


@given(st.lists(st.integers(min_value=0, max_value=10_000), min_size=2, max_size=20))
def test_increases_add_up_over_successive_rounds(steps: list[int]) -> None:
    """For a counter that never resets, the increase over the whole span is the sum of the
    increases between successive rounds (what a sliding window relies on)."""
    ring = ScrapeRing(capacity=len(steps) + 1)
    total = 0
    for i, step in enumerate(steps):
        total += step
        ring.add(worker_round(float(i), click=total, view=0))
    whole = ring.increase_by("aether_stream_events_by_type_total", "event_type", 0, -1)
    parts = sum(
        (ring.increase_by("aether_stream_events_by_type_total", "event_type", i - 1, i) or {})[
            "click"
        ]
        for i in range(1, len(steps))
    )
    assert whole is not None
    assert whole["click"] == parts == total - steps[0]


def test_rounds_out_of_order_are_ignored() -> None:
    ring = ScrapeRing()
    ring.add(worker_round(10.0, 1, 1))
    ring.add(worker_round(10.0, 2, 2))
    ring.add(worker_round(5.0, 3, 3))
    assert len(ring) == 1


def test_a_window_uses_the_rounds_a_target_answered_and_sees_a_restart_inside_it() -> None:
    ring = ScrapeRing()
    ring.add(Round.of(0.0, {"worker": None}))  # not up yet when the window starts
    ring.add(worker_round(5.0, click=100, view=0))
    ring.add(worker_round(10.0, click=160, view=0))
    ring.add(worker_round(15.0, click=30, view=0))  # restarted, then counted 30
    ring.add(Round.of(20.0, {"worker": None}))  # a missed scrape ends the window

    grown = ring.increase_by("aether_stream_events_by_type_total", "event_type", 0, -1)

    assert grown == {"click": 60.0 + 30.0, "view": 0.0}
    # per second over the span the worker answered (5 s → 15 s), not over the whole window
    assert ring.rate_now("aether_stream_events_by_type_total", window=4) == pytest.approx(90 / 10)


def test_a_series_no_target_exports_has_no_rate_rather_than_zero() -> None:
    ring = ScrapeRing()
    ring.add(worker_round(0.0, click=1, view=1))
    ring.add(worker_round(5.0, click=1, view=1))

    assert ring.rate_now("aether_recommend_requests_total", window=1) is None
    assert ring.rate_now("aether_stream_events_by_type_total", window=1) == 0.0
