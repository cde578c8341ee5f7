"""Privacy requests as a register (``streams.privacy``): order-insensitive and idempotent, and
what suppression and the batch effects mean."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from events.models import PrivacyRequest
from streams.handlers import Decoded
from streams.privacy import (
    PrivacyStatus,
    apply_request,
    decode_status,
    encode_status,
    handle_privacy,
    subject_hash,
    suppresses,
)
from streams.testing import record

T0 = 1_700_000_000_000

requests = st.lists(
    st.tuples(st.sampled_from(["opt_out", "opt_in", "delete"]), st.integers(0, 50)),
    min_size=1,
    max_size=12,
).map(
    lambda rows: [
        PrivacyRequest(event_id=f"p{n}", user_id="u", action=a, event_time=T0 + t * 1000)
        for n, (a, t) in enumerate(rows)
    ]
)


def _fold(sequence: list[PrivacyRequest]) -> PrivacyStatus:
    status = PrivacyStatus()
    for request in sequence:
        apply_request(status, request)
    return status


@given(requests, st.integers(0, 1000))
def test_the_status_depends_on_the_set_of_requests_only(
    batch: list[PrivacyRequest], seed: int
) -> None:
    rng = random.Random(seed)
    shuffled = batch + rng.sample(batch, min(3, len(batch)))
    rng.shuffle(shuffled)
    assert _fold(shuffled) == _fold(batch)
    assert decode_status(encode_status(_fold(batch))) == _fold(batch)


def _request(event_id: str, action: str, t: int) -> PrivacyRequest:
    return PrivacyRequest(event_id=event_id, user_id="u", action=action, event_time=t)


def test_the_latest_opt_request_wins_and_a_delete_suppresses_up_to_its_time() -> None:
    status = _fold([_request("b", "opt_in", T0 + 2), _request("a", "opt_out", T0 + 1)])
    assert not status.opted_out and not suppresses(status, T0)
    status = _fold([_request("d", "delete", T0 + 10)])
    assert suppresses(status, T0 + 10) and suppresses(status, T0)
    assert not suppresses(status, T0 + 11)  # new data after the deletion starts afresh
    assert suppresses(_fold([_request("o", "opt_out", T0)]), T0 + 10**9)
    assert not suppresses(None, T0)


def test_a_committed_deletion_is_not_repeated_by_a_redelivered_request() -> None:
    delete = _request("d", "delete", T0)
    out = _request("o", "opt_out", T0)
    statuses: dict[str, PrivacyStatus] = {}
    batch = [Decoded(record(b"{}"), delete), Decoded(record(b"{}"), out)]
    first = handle_privacy(batch, statuses)
    again = handle_privacy(batch, statuses)
    assert (first.applied, first.touched, first.delete, first.hide) == (2, {"u"}, {"u"}, {"u"})
    assert (again.applied, again.duplicates, again.touched) == (0, 2, set())
    # The marker was committed after the erasure, so none again (fresh data stays); an opted-out
    # user's row is deleted again, which is harmless.
    assert (again.delete, again.hide) == (set(), {"u"})


def test_the_marker_key_does_not_hold_the_user_id() -> None:
    digest = subject_hash("ns", "alice@example.com")
    assert "alice" not in digest and digest == subject_hash("ns", "alice@example.com")
    assert digest != subject_hash("other", "alice@example.com")
