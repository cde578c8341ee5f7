"""Privacy requests as a register (``streams.privacy``): order-insensitive and idempotent, and
what suppression and the batch effects mean."""

from __future__ import annotations

import dataclasses
import random

from hypothesis import example, given, settings
from hypothesis import strategies as st

from bandits.attribution import AttributionConfig
from core.settings import Settings
from events.models import PrivacyRequest
from streams.handlers import Decoded, SourceRecord
from streams.privacy import (
    PrivacyStatus,
    apply_request,
    decode_status,
    encode_status,
    handle_privacy,
    subject_hash,
    suppresses,
)
from streams.testing import (
    IMPRESSIONS,
    LOCAL_TOPICS,
    PRIVACY,
    LocalPipeline,
    interaction,
    privacy_request,
    record,
)
from streams.topics import TopicNames

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


# -- the harness runs the same interactions step, privacy included -------------------------------
OPS = st.lists(
    st.tuples(
        st.sampled_from(["view", "view", "click", "slate", "delete", "opt_out", "opt_in"]),
        st.sampled_from(["u0", "u1"]),
        st.sampled_from(["a", "b", "c"]),
        st.integers(0, 50),  # seconds: all within the allowed lateness, nothing is late
    ),
    min_size=1,
    max_size=25,
)


def _records(ops: list[tuple[str, str, str, int]]) -> list[SourceRecord]:
    records = []
    for n, (kind, user, item, seconds) in enumerate(ops):
        t = T0 + seconds * 1000
        if kind in ("view", "click"):
            records.append(record(interaction(f"e{n}", user, item, kind, t)))
        elif kind == "slate":
            slate = {
                "request_id": f"r{n}",
                "user_id": user,
                "event_time": t,
                "model_version": "m",
                "items": [
                    {"item_id": item, "position": 0, "score": 1.0, "source": "s", "propensity": 1.0}
                ],
            }
            records.append(record(slate, topic=IMPRESSIONS))
        else:
            records.append(record(privacy_request(f"p{n}", user, kind, t), topic=PRIVACY))
    return records


@settings(max_examples=100, deadline=None)
@given(OPS, st.lists(st.integers(1, 8), min_size=1, max_size=25))
# A user with state, then their deletion and a newer event in one batch (a fresh state).
@example([("view", "u0", "a", 1), ("delete", "u0", "a", 5), ("view", "u0", "b", 9)], [1, 8])
def test_after_a_deletion_nothing_of_the_user_up_to_its_time_remains_anywhere(
    ops: list[tuple[str, str, str, int]], sizes: list[int]
) -> None:
    """Whatever the batch boundaries, once a delete request (time D) is processed, no state, row,
    offline record or pending impression of the user with event time ≤ D is left."""
    records = _records(ops)
    pipeline = LocalPipeline(attribution=AttributionConfig())
    start, turn = 0, 0
    while start < len(records):
        size = sizes[turn % len(sizes)]
        pipeline.feed(records[start : start + size])
        start, turn = start + size, turn + 1
    deleted: dict[str, int] = {}
    for kind, user, _, seconds in ops:
        if kind == "delete":
            deleted[user] = max(deleted.get(user, 0), T0 + seconds * 1000)
    for user, through in deleted.items():
        state = pipeline.users.get(user)
        assert state is None or all(t > through for t, _, _ in state.history)
        assert all(e.event_time_ms > through for e in pipeline.event_log if e.user_id == user)
        for snapshot in pipeline.state.attribution.values():
            pending = [p for p in snapshot["pending"] if p["user_id"] == user]
            assert all(p["impression_ms"] > through for p in pending)
        row = pipeline.store.read_users([user]).get(user)
        assert row is None or row.event_time_ms > through


def test_the_harness_applies_privacy_requests_as_the_worker_does() -> None:
    pipeline = LocalPipeline()
    pipeline.feed([record(interaction("e1", "u", "a", "view", T0))])
    pipeline.feed([record(privacy_request("p1", "u", "opt_out", T0 + 1), topic=PRIVACY)])
    assert pipeline.store.read_users(["u"]) == {}  # the online row is hidden
    effects = pipeline.feed([record(interaction("e2", "u", "b", "view", T0 + 2))])
    assert (effects.suppressed, effects.applied, pipeline.users["u"].latest_ms) == (1, 0, T0)
    pipeline.feed(
        [
            record(interaction("e3", "u", "c", "view", T0 + 4)),
            record(privacy_request("p2", "u", "delete", T0 + 3), topic=PRIVACY),
            record(privacy_request("p3", "u", "opt_in", T0 + 5), topic=PRIVACY),
        ]
    )
    # Requests act before the batch's events: erased, opted in, then e3 starts a fresh state.
    assert pipeline.erased == ["u"] and [e.event_id for e in pipeline.event_log] == ["e3"]
    assert pipeline.users["u"].history == [(T0 + 4, "e3", "c")]
    pipeline.feed([record(interaction("e1", "u", "a", "view", T0))])  # re-delivered: deleted
    assert pipeline.store.read_users(["u"])["u"].recent_items == ("c",)


def test_local_topics_are_bare_names() -> None:
    namespaced = TopicNames.for_settings(Settings(namespace="ns"))
    for name, bare in dataclasses.asdict(LOCAL_TOPICS).items():
        assert getattr(namespaced, name) == f"ns.{bare}"
