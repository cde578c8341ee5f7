"""Bandit posteriors from the real broker: impressions joined with rewards in event time,
outcomes re-keyed by item, posteriors in Redis in the layout serving reads; duplicates change
nothing."""

from __future__ import annotations

import orjson
import pytest
import redis
from streams_harness import T0, consumed, encoded, produce, wait_for

from bandits import configs_from_settings
from bandits.posterior import decode_counts_value, posterior_read_plan
from core.settings import Settings
from streams.testing import interaction

pytestmark = pytest.mark.integration

USER = "bandit-user"
HOME = {"surface": "home"}


def _slate(request_id: str, items: list[str], t: int, context: dict[str, str]) -> bytes:
    return orjson.dumps(
        {
            "request_id": request_id,
            "user_id": USER,
            "event_time": t,
            "model_version": "m1",
            "context": context,
            "items": [
                {"item_id": i, "position": n, "score": 1.0, "source": "ann", "propensity": 0.5}
                for n, i in enumerate(items)
            ],
        }
    )


def _reward(event_id: str, item: str, kind: str, t: int, request_id: str) -> dict[str, object]:
    return {**interaction(event_id, USER, item, kind, t), "request_id": request_id}


def _stored(
    client: redis.Redis, settings: Settings, segment: str
) -> dict[str, tuple[float, float]]:
    plan = posterior_read_plan(["a", "b", "c"], segment, settings.redis_key)
    key, fields = plan[-1]
    values = client.hmget(key, fields)
    return {
        item: decode_counts_value(raw)[:2]
        for item, raw in zip(fields, values, strict=True)
        if raw is not None
    }


def test_impressions_and_rewards_become_posteriors_and_duplicates_change_nothing(
    settings: Settings, start_worker
) -> None:
    attribution, posterior = configs_from_settings(settings)
    slates = [
        (USER.encode(), _slate("r1", ["a", "b"], T0, HOME)),
        (USER.encode(), _slate("r2", ["a", "c"], T0 + 1_000, {})),
    ]
    rewards = [
        _reward("click-a", "a", "click", T0 + 2_000, "r1"),  # r1|a success
        _reward("dismiss-c", "c", "dismiss", T0 + 3_000, "r2"),  # r2|c failure at once
    ]
    # Moves the partition's event time past every window (+ lateness): r1|b, r2|a are failures.
    closing = interaction("later", USER, "z", "view", T0 + attribution.window_ms + 120_000)
    start_worker(settings)
    produce(settings, "impressions", slates)
    produce(settings, "events", encoded([*rewards, closing]))
    client = redis.Redis.from_url(settings.redis.url.get_secret_value())
    wait_for(lambda: len(_stored(client, settings, "*")) == 3, what="posteriors of a, b, c")
    wait_for(
        lambda: consumed(settings, ["impressions", "events", "bandit-outcomes"]), what="consumed"
    )
    # Sums are discounted to the newest outcome of the item (half-life 7 days: ~1e-6 per s).
    rel = 1e-4
    first = _stored(client, settings, "*")
    assert first["a"] == pytest.approx((1.0, 1.0), rel=rel)
    assert first["b"] == pytest.approx((0.0, 1.0), rel=rel)
    assert first["c"] == pytest.approx((0.0, 1.0), rel=rel)
    home = _stored(client, settings, "surface=home")
    assert home == {"a": pytest.approx((1.0, 0.0)), "b": pytest.approx((0.0, 1.0))}
    assert posterior.prior_alpha == 1.0  # serving adds the prior: Beta(1 + S, 1 + F)

    # Every input again (a producer retry, a replayed partition): nothing changes.
    produce(settings, "impressions", slates)
    produce(settings, "events", encoded([*rewards, closing]))
    wait_for(
        lambda: consumed(settings, ["impressions", "events", "bandit-outcomes"]), what="consumed"
    )
    assert _stored(client, settings, "*") == first
    assert _stored(client, settings, "surface=home") == home
