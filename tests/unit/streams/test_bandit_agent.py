"""The bandit agents' glue (``streams.bandit_agent``) with a dict standing in for Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bandits.attribution import AttributionConfig, AttributionState, attribute
from bandits.posterior import Outcome, decode_counts_value, posterior_read_plan
from core.settings import Settings
from events.models import Impression, Interaction
from streams.bandit_agent import BanditRuntime, decode_outcome, encode_outcome, forget_users
from streams.eventtime import Lateness
from streams.handlers import SourceRecord

T0 = 1_700_000_000_000


class FakeRedis:
    def __init__(self) -> None:
        self.strings: dict[str, bytes] = {}
        self.hashes: dict[str, dict[str, str]] = {}

    def mget(self, keys: list[str]) -> list[bytes | None]:
        return [self.strings.get(k) for k in keys]

    def pipeline(self, transaction: bool = True) -> FakeRedis:
        return self

    def mset(self, values: dict[str, bytes]) -> None:
        self.strings.update(values)

    def hset(self, key: str, field: str, value: str) -> None:
        self.hashes.setdefault(key, {})[field] = value

    def execute(self) -> list[Any]:
        return []


def _runtime(client: FakeRedis) -> BanditRuntime:
    return BanditRuntime(
        Settings(namespace="unit"),
        client=client,  # type: ignore[arg-type]
        state=None,  # type: ignore[arg-type]  # not used by the outcome agent
        producer=None,  # type: ignore[arg-type]
        policy=Lateness(),
        now_ms=lambda: T0,
    )


def _outcome(request: str, item: str, success: bool, t: int) -> Outcome:
    return Outcome(
        f"{request}|{item}", item, "*", t, success, "positive" if success else "no_reward"
    )


def test_outcomes_become_posterior_hashes_once() -> None:
    client = FakeRedis()
    bandit = _runtime(client)
    outcomes = [
        _outcome("r1", "a", True, T0),
        _outcome("r2", "a", False, T0),
        _outcome("r3", "b", False, T0),
    ]
    records = [
        SourceRecord("unit.bandit-outcomes", 0, n, encode_outcome(o))
        for n, o in enumerate(outcomes)
    ]
    assert asyncio.run(bandit.on_outcomes(records)) == 3
    assert asyncio.run(bandit.on_outcomes(records)) == 0  # re-delivered: ignored
    [(key, _)] = posterior_read_plan(["a", "b"], "*", bandit.settings.redis_key)
    stored = {item: decode_counts_value(v)[:2] for item, v in client.hashes[key].items()}
    assert stored == {"a": pytest.approx((1.0, 1.0)), "b": pytest.approx((0.0, 1.0))}
    assert decode_outcome(encode_outcome(outcomes[0])) == outcomes[0]


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
    assert AttributionState.from_dict(data, config).pending_of_user("kept")
