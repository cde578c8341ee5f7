"""``streams.worker_metrics.observe_many``: the same histogram as one ``observe`` per value."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

from streams.worker_metrics import FRESHNESS, observe_many

BOUNDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
values = st.lists(
    st.one_of(
        st.sampled_from([*BOUNDS, 0.0, math.inf]),  # on a bound: that bucket, as observe
        st.floats(min_value=0, max_value=120, allow_nan=False),
    ),
    max_size=60,
)


def histogram() -> tuple[CollectorRegistry, Histogram]:
    registry = CollectorRegistry()
    return registry, Histogram("h_seconds", "test", buckets=BOUNDS, registry=registry)


@given(batches=st.lists(values, max_size=4))
def test_batches_expose_what_single_observations_expose(batches: list[list[float]]) -> None:
    one_by_one, single = histogram()
    batched, many = histogram()
    for batch in batches:
        for value in batch:
            single.observe(value)
        observe_many(many, batch)
    for le in [*BOUNDS, math.inf]:
        bucket = {"le": str(le) if le != math.inf else "+Inf"}
        assert batched.get_sample_value("h_seconds_bucket", bucket) == one_by_one.get_sample_value(
            "h_seconds_bucket", bucket
        )
    assert batched.get_sample_value("h_seconds_count") == one_by_one.get_sample_value(
        "h_seconds_count"
    )
    total = one_by_one.get_sample_value("h_seconds_sum")  # added in another order: rounding
    assert math.isclose(batched.get_sample_value("h_seconds_sum"), total, rel_tol=1e-12) or (
        math.isinf(total) and batched.get_sample_value("h_seconds_sum") == total
    )


def test_the_worker_freshness_histogram_takes_batches() -> None:
    before = FRESHNESS._sum.get()
    observe_many(FRESHNESS, [0.02, 0.3])
    assert math.isclose(FRESHNESS._sum.get() - before, 0.32)
