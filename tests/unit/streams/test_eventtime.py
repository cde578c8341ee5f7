"""Watermarks, lateness and bounded de-duplication (streams.eventtime)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.eventtime import Lateness, Verdict, advance, forget_before, judge, remember

POLICY = Lateness(allowed_lateness_ms=1_000, dedup_horizon_ms=500, max_future_skew_ms=10_000)


def test_first_event_of_a_partition_is_never_late() -> None:
    assert judge(None, 0, POLICY) is Verdict.APPLY


def test_event_exactly_at_the_lateness_bound_is_applied_and_one_ms_more_is_late() -> None:
    assert judge(5_000, 4_000, POLICY) is Verdict.APPLY
    assert judge(5_000, 3_999, POLICY) is Verdict.LATE


def test_event_far_ahead_of_the_processing_time_is_future_but_a_quiet_gap_is_not() -> None:
    assert judge(5_000, 15_000, POLICY, now_ms=5_000) is Verdict.APPLY
    assert judge(5_000, 15_001, POLICY, now_ms=5_000) is Verdict.FUTURE
    assert judge(5_000, 10**9, POLICY, now_ms=2 * 10**9) is Verdict.APPLY  # days of silence


@given(st.lists(st.integers(0, 10**9), min_size=1, max_size=50))
def test_watermark_is_the_running_maximum(times: list[int]) -> None:
    watermark = None
    for t in times:
        watermark = advance(watermark, t)
    assert watermark == max(times)


def test_remember_reports_duplicates() -> None:
    seen: dict[str, int] = {}
    assert remember(seen, "a", 1)
    assert not remember(seen, "a", 1)
    assert seen == {"a": 1}


@given(
    st.dictionaries(st.text(min_size=1, max_size=4), st.integers(0, 10_000), max_size=30),
    st.integers(0, 12_000),
)
def test_a_forgotten_id_can_only_come_back_late(seen: dict[str, int], watermark: int) -> None:
    """Any id dropped at this watermark is late at this or any later watermark."""
    kept = forget_before(seen, POLICY.dedup_cutoff(watermark))
    for event_id, t in seen.items():
        if event_id not in kept:
            for later in (watermark, watermark + 1, watermark + 10_000):
                assert judge(later, t, POLICY) is Verdict.LATE
