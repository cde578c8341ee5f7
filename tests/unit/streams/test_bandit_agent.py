"""The bandit runtime (``streams.bandit_agent``) over the in-memory ``StateStore`` port."""

from __future__ import annotations

import asyncio
import itertools

import orjson
import pytest

from bandits.attribution import AttributionConfig, AttributionState, attribute
from bandits.posterior import Outcome, decode_counts_value, posterior_hash_parts
from core.errors import SchemaError
from core.settings import Settings
from events.models import Impression, Interaction
from streams.bandit_agent import BanditRuntime
from streams.bandit_steps import (
    BanditConfig,
    BanditSteps,
    decode_outcome_record,
    encode_outcome,
    forget_users,
    outcome_messages,
)
from streams.handlers import SourceRecord
from streams.partitioning import partition_for_key
from streams.privacy import PrivacyStatus
from streams.state_port import InMemoryStateStore
from streams.testing import interaction, privacy_request
from streams.topics import TopicNames

T0 = 1_700_000_000_000
TOPICS = TopicNames.for_settings(Settings(namespace="unit"))
WINDOW = 10 * 60_000


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, int]] = []

    def produce(
        self, topic: str, value: bytes, key: bytes | None = None, partition: int = -1
    ) -> None:
        self.sent.append((topic, value, partition))

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        return 0


def _runtime(state: InMemoryStateStore) -> tuple[BanditRuntime, FakeProducer]:
    producer = FakeProducer()
    config = BanditConfig(TOPICS, attribution=AttributionConfig(window_ms=WINDOW))
    runtime = BanditRuntime(
        BanditSteps(config),
        state=state,
        producer=producer,  # type: ignore[arg-type]
        now_ms=lambda: T0,
    )
    return runtime, producer


def _outcome(request: str, item: str, success: bool, t: int) -> Outcome:
    return Outcome(
        f"{request}|{item}", item, "*", t, success, "positive" if success else "no_reward"
    )


def test_outcomes_become_posterior_hashes_once() -> None:
    state = InMemoryStateStore()
    bandit, _ = _runtime(state)
    outcomes = [
        _outcome("r1", "a", True, T0),
        _outcome("r2", "a", False, T0),
        _outcome("r3", "b", False, T0),
    ]
    records = [
        SourceRecord(TOPICS.bandit_outcomes, 0, n, encode_outcome(o))
        for n, o in enumerate(outcomes)
    ]
    assert asyncio.run(bandit.on_outcomes(records)) == 3
    assert asyncio.run(bandit.on_outcomes(records)) == 0  # re-delivered: ignored
    hashed = state.posterior_hashes[posterior_hash_parts("*")]
    stored = {item: decode_counts_value(v)[:2] for item, v in hashed.items()}
    assert stored == {"a": pytest.approx((1.0, 1.0)), "b": pytest.approx((0.0, 1.0))}
    assert decode_outcome_record(encode_outcome(outcomes[0])) == [outcomes[0]]


def test_grouped_outcome_messages_fold_as_one_record_per_outcome() -> None:
    """One message per partition of the outcomes' items, each item on its murmur2 partition in
    its order; the posteriors come out as from one legacy record per outcome."""
    outcomes = [_outcome(f"r{n}", f"item-{n % 7}", n % 3 == 0, T0 + n) for n in range(60)]
    messages = outcome_messages(outcomes, 4)
    assert [m.partition for m in messages] == sorted({m.partition for m in messages})
    assert len(messages) == len({partition_for_key(o.item_id.encode(), 4) for o in outcomes})
    decoded = []
    for message in messages:
        for outcome in decode_outcome_record(message.payload):
            assert message.partition == partition_for_key(outcome.item_id.encode(), 4)
            decoded.append(outcome)
    for item in {o.item_id for o in outcomes}:
        assert [o for o in decoded if o.item_id == item] == [
            o for o in outcomes if o.item_id == item
        ]

    def posteriors(records: list[SourceRecord]) -> dict[str, dict[str, bytes]]:
        state = InMemoryStateStore()
        bandit, _ = _runtime(state)
        asyncio.run(bandit.on_outcomes(records))
        return state.posterior_hashes[posterior_hash_parts("*")]

    grouped = [
        SourceRecord(TOPICS.bandit_outcomes, m.partition, n, m.payload)
        for n, m in enumerate(messages)
    ]
    single = [
        SourceRecord(TOPICS.bandit_outcomes, 0, n, encode_outcome(o))
        for n, o in enumerate(outcomes)
    ]
    assert posteriors(grouped) == posteriors(single)


@pytest.mark.parametrize("raw", [b"[]", b"[1]", b'{"outcome_id": "x"}', b"not json", b"3"])
def test_a_corrupt_outcome_record_is_counted_bad(raw: bytes) -> None:
    with pytest.raises(SchemaError) as raised:
        decode_outcome_record(raw)
    assert raised.value.reason == "invalid_outcome"
    state = InMemoryStateStore()
    bandit, _ = _runtime(state)
    good = encode_outcome(_outcome("r1", "a", True, T0))
    records = [SourceRecord(TOPICS.bandit_outcomes, 0, n, v) for n, v in enumerate([raw, good])]
    assert asyncio.run(bandit.on_outcomes(records)) == 1  # the good record still applies


def test_a_deleted_user_leaves_no_pending_impressions_or_buffered_rewards() -> None:
    config = AttributionConfig()
    state = AttributionState()
    for n, user in enumerate(("gone", "kept")):  # ids must not embed the user id
        slate = Impression(
            request_id=f"r{n}",
            user_id=user,
            event_time=T0,
            model_version="m",
            items=(
                {"item_id": "a", "position": 0, "score": 1.0, "source": "ann", "propensity": 1.0},
            ),
        )
        attribute(state, slate, config)
        click = Interaction(
            event_id=f"c{n}", event_type="click", user_id=user, item_id="b", event_time=T0
        )
        attribute(state, click, config)
    data = forget_users(state.to_dict(), {"gone"})
    assert "gone" not in str(data) and "kept" in str(data)
    assert AttributionState.from_dict(data, config).pending_of("kept", "a")


def _slate(request_id: str, user: str, item: str, t: int) -> SourceRecord:
    body = {
        "request_id": request_id,
        "user_id": user,
        "event_time": t,
        "model_version": "m",
        "items": [
            {"item_id": item, "position": 0, "score": 1.0, "source": "ann", "propensity": 0.5}
        ],
    }
    return SourceRecord(TOPICS.impressions, 0, _next_offset(), orjson.dumps(body))


def _event(body: dict[str, object] | bytes, topic: str = TOPICS.events) -> SourceRecord:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return SourceRecord(topic, 0, _next_offset(), raw)


_OFFSETS = itertools.count()


def _next_offset() -> int:
    """Records at increasing offsets, as a broker appends them (the steps skip offsets they
    have committed; one counter for every topic is increasing per partition too)."""
    return next(_OFFSETS)


def test_attribution_emits_outcomes_by_item_and_respects_privacy() -> None:
    state = InMemoryStateStore()
    state.privacy["quiet"] = PrivacyStatus(opted_out=True)  # stored by the interactions step
    bandit, producer = _runtime(state)
    first = [
        _slate("r1", "kept", "a", T0),
        _slate("r2", "gone", "a", T0),
        _slate("r3", "quiet", "a", T0),
        _event({**interaction("c1", "kept", "a", "click", T0 + 1), "request_id": "r1"}),
        _event(b"not json"),  # the feature step dead-letters it; attribution skips it
    ]
    assert asyncio.run(bandit.on_attribution(first)) == []  # windows still open
    [snapshot] = state.attribution.values()
    assert {p["user_id"] for p in snapshot["pending"]} == {"kept", "gone"}  # not "quiet"
    delete = _event(privacy_request("p1", "gone", "delete", T0 + 2), TOPICS.privacy)
    closing = _event(interaction("z", "kept", "b", "view", T0 + WINDOW + 120_000))
    outcomes = asyncio.run(bandit.on_attribution([delete, closing]))
    # r2|a was forgotten with its user; r1|a is decided when the watermark passes its window.
    assert [(o.outcome_id, o.success) for o in outcomes] == [("r1|a", True)]
    # on item a's partition (the runtime's steps have one partition)
    assert [(topic, partition) for topic, _, partition in producer.sent] == [
        (TOPICS.bandit_outcomes, 0)
    ]
    assert "gone" not in str(state.attribution)
