"""Which served slates the offline impression log keeps (``StreamSteps.impressions`` →
``Effects.applied_impressions``, through the harness that applies effects as the worker does).

Every admitted slate, in any batching, except those of a user who opted out and those of a
deleted user up to the deletion's time (the privacy rule of events, ``streams.privacy``); a
deletion also erases what was kept before it. Late slates are not kept."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.eventtime import Lateness
from streams.testing import IMPRESSIONS, PRIVACY, LocalPipeline, privacy_request, record

T0 = 1_700_000_000_000


def slate(request_id: str, user: str, t: int) -> dict[str, object]:
    return {
        "request_id": request_id,
        "user_id": user,
        "items": [{"item_id": "i1", "position": 0, "score": 1.0, "source": "ann",
                   "propensity": 1.0}],
        "model_version": "m@1",
        "event_time": t,
    }  # fmt: skip


def test_admitted_slates_are_kept_late_ones_are_not() -> None:
    pipeline = LocalPipeline(policy=Lateness(allowed_lateness_ms=1_000))
    pipeline.feed([record(slate("r1", "u", T0), topic=IMPRESSIONS, partition=0)])
    pipeline.feed([record(slate("r2", "v", T0 + 60_000), topic=IMPRESSIONS, partition=0)])
    pipeline.feed([record(slate("r3", "u", T0 + 1), topic=IMPRESSIONS, partition=0)])  # late
    assert [s.request_id for s in pipeline.impression_log] == ["r1", "r2"]


@given(
    times=st.lists(st.integers(0, 100), min_size=1, max_size=12),
    deleted_at=st.integers(0, 100),
    deletion_first=st.booleans(),
    cut=st.integers(0, 12),
)
def test_a_deleted_users_slates_up_to_the_deletion_are_never_kept(
    times: list[int], deleted_at: int, deletion_first: bool, cut: int
) -> None:
    """Whether the deletion reaches the worker before or after the slates, and however they are
    batched, the log ends with exactly the slates after the deletion time (and the other
    user's)."""
    pipeline = LocalPipeline()
    slates = [
        record(slate(f"r{n}", "u", T0 + t), topic=IMPRESSIONS, partition=0)
        for n, t in enumerate(sorted(times))
    ]
    other = record(slate("other", "w", T0), topic=IMPRESSIONS, partition=1)
    deletion = record(privacy_request("p", "u", "delete", T0 + deleted_at), topic=PRIVACY)
    if deletion_first:
        pipeline.feed([deletion])
    pipeline.feed([other, *slates[:cut]])
    if slates[cut:]:
        pipeline.feed(slates[cut:])
    if not deletion_first:
        pipeline.feed([deletion])
    kept = sorted(s.request_id for s in pipeline.impression_log)
    after = [f"r{n}" for n, t in enumerate(sorted(times)) if t > deleted_at]
    expected_u = after if deletion_first else []
    assert kept == sorted(["other", *expected_u])
