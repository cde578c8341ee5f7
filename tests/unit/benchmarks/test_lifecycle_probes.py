"""``benchmarks.lifecycle_probes``: when the stores first hold each new item, and quantiles of
serving's refresh passes read back from two ``/metrics`` scrapes."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from benchmarks.lifecycle_probes import Series, StoreProbe, histogram_series, refresh_figures

BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def page(passes: dict[str, list[float]], steps: dict[str, list[float]] | None = None) -> str:
    """A ``/metrics`` page holding the two refresh histograms after ``passes`` (by kind)."""
    registry = CollectorRegistry()
    total = Histogram(
        "aether_catalogue_refresh_seconds", "", ["pass"], buckets=BUCKETS, registry=registry
    )
    step = Histogram(
        "aether_catalogue_refresh_step_seconds", "", ["step"], buckets=BUCKETS, registry=registry
    )
    for kind, values in passes.items():
        for value in values:
            total.labels(kind).observe(value)
    for name, values in (steps or {}).items():
        for value in values:
            step.labels(step=name).observe(value)
    return generate_latest(registry).decode()


def test_only_the_passes_between_the_two_scrapes_count() -> None:
    before = page({"full": [2.0] * 50})  # slow passes before the measured window
    after = page(
        {"full": [2.0] * 50 + [0.7] * 3, "incremental": [0.03] * 97}, {"scan": [0.02] * 100}
    )
    figures = refresh_figures(before, after)
    assert figures["serve_refresh_passes"] == 100
    assert figures["serve_refresh_full_passes"] == 3
    assert figures["serve_refresh_incremental_passes"] == 97
    assert 0.01 <= figures["serve_refresh_p50_s"] <= 0.05  # the 2 s passes are not in it
    assert 0.5 <= figures["serve_refresh_p99_s"] <= 1.0
    assert math.isclose(figures["serve_refresh_mean_s"], (97 * 0.03 + 3 * 0.7) / 100)
    assert 0.5 <= figures["serve_refresh_full_p50_s"] <= 1.0
    assert 0.01 <= figures["serve_refresh_incremental_p99_s"] <= 0.05
    assert 0.01 <= figures["serve_refresh_scan_p99_s"] <= 0.05
    assert math.isclose(figures["serve_refresh_scan_mean_s"], 0.02)


def test_no_passes_give_nan_not_zero() -> None:
    figures = refresh_figures(page({"full": [0.3]}), page({"full": [0.3]}))
    assert figures["serve_refresh_passes"] == 0
    assert math.isnan(figures["serve_refresh_p99_s"])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0.0, 3.0), min_size=1, max_size=200), st.sampled_from([0.5, 0.9, 0.99]))
def test_a_quantile_lies_in_the_bucket_of_the_exact_one(values, q) -> None:
    """The estimate is exact to a bucket: it lies between the bounds of the bucket holding the
    observation of rank ``ceil(q·n)`` (the last finite bound when that one is beyond it)."""
    (series,) = histogram_series(
        page({"full": values}), "aether_catalogue_refresh_seconds"
    ).values()
    estimate = series.since(Series()).quantile(q)
    exact = float(np.sort(values)[max(math.ceil(q * len(values)) - 1, 0)])
    bounds = [0.0, *BUCKETS, math.inf]
    upper = next(n for n, b in enumerate(bounds) if exact <= b and n > 0)
    assert bounds[upper - 1] - 1e-12 <= estimate <= min(bounds[upper], BUCKETS[-1]) + 1e-12


def test_the_store_probe_times_each_store_and_keeps_the_first() -> None:
    now = [0.0]
    content: set[str] = set()
    online: set[str] = set()
    probe = StoreProbe(
        {"a": (0, 0.0), "b": (1, 0.0)},
        {
            "content_row": lambda ids: [i for i in ids if i in content],
            "online_row": lambda ids: [i for i in ids if i in online],
        },
        clock=lambda: now[0],
    )
    for at, store, items in (
        (1.0, content, {"a"}),
        (2.0, online, {"a", "b"}),
        (3.0, content, {"b"}),
    ):
        now[0] = at
        store.update(items)
        probe.round()
    assert probe.found_s == {
        "content_row": {"a": 1.0, "b": 3.0},
        "online_row": {"a": 2.0, "b": 2.0},
    }
    assert probe.first_found_s() == {"a": 1.0, "b": 2.0}


def test_a_failing_store_is_counted_and_asked_again() -> None:
    calls: list[list[str]] = []

    def flaky(ids):
        calls.append(list(ids))
        if len(calls) == 1:
            raise ConnectionError("milvus restarting")
        return ids

    probe = StoreProbe({"a": (0, 0.0)}, {"content_row": flaky})
    probe.round()
    probe.round()
    assert probe.errors == 1 and calls == [["a"], ["a"]]
    assert set(probe.found_s["content_row"]) == {"a"}
