"""Bandit posteriors from the real broker: impressions joined with rewards in event time,
outcomes re-keyed by item, posteriors in Redis in the layout serving reads; duplicates change
nothing."""

from __future__ import annotations

import orjson
import pytest
import redis
from streams_harness import Lane, consumed, encoded, produce, wait_for

from bandits import configs_from_settings
from bandits.posterior import decode_counts_value, posterior_read_plan
from core.settings import Settings
from streams.testing import interaction

pytestmark = pytest.mark.integration

HOME = {"surface": "home"}


def _slate(user: str, request_id: str, items: list[str], t: int, context: dict[str, str]) -> bytes:
    return orjson.dumps(
        {
            "request_id": request_id,
            "user_id": user,
            "event_time": t,
            "model_version": "m1",
            "context": context,
            "items": [
                {"item_id": i, "position": n, "score": 1.0, "source": "ann", "propensity": 0.5}
                for n, i in enumerate(items)
            ],
        }
    )


def _stored(
    client: redis.Redis, settings: Settings, items: list[str], segment: str
) -> dict[str, tuple[float, float]]:
    plan = posterior_read_plan(items, segment, settings.redis_key)
    key, fields = plan[-1]
    values = client.hmget(key, fields)
    return {
        item: decode_counts_value(raw)[:2]
        for item, raw in zip(fields, values, strict=True)
        if raw is not None
    }


def test_impressions_and_rewards_become_posteriors_and_duplicates_change_nothing(
    lane: Lane,
) -> None:
    settings, t0, user = lane.settings, lane.t0, lane.id("bandit-user")
    a, b, c = items = [lane.id(i) for i in "abc"]
    r1, r2 = lane.id("r1"), lane.id("r2")
    attribution, posterior = configs_from_settings(settings)
    slates = [
        (user.encode(), _slate(user, r1, [a, b], t0, HOME)),
        (user.encode(), _slate(user, r2, [a, c], t0 + 1_000, {})),
    ]
    rewards = [  # r1|a success; r2|c failure at once
        {**interaction(lane.id("click-a"), user, a, "click", t0 + 2_000), "request_id": r1},
        {**interaction(lane.id("dismiss-c"), user, c, "dismiss", t0 + 3_000), "request_id": r2},
    ]
    # Moves the partition's event time past every window (+ lateness): r1|b, r2|a are failures.
    closing = interaction(
        lane.id("later"), user, lane.id("z"), "view", t0 + attribution.window_ms + 120_000
    )
    produce(settings, "impressions", slates)
    produce(settings, "events", encoded([*rewards, closing]))
    client = redis.Redis.from_url(settings.redis.url.get_secret_value())
    wait_for(lambda: len(_stored(client, settings, items, "*")) == 3, what="posteriors of a, b, c")
    wait_for(
        lambda: consumed(settings, ["impressions", "events", "bandit-outcomes"]), what="consumed"
    )
    # Sums are discounted to the newest outcome of the item (half-life 7 days: ~1e-6 per s).
    rel = 1e-4
    first = _stored(client, settings, items, "*")
    assert first[a] == pytest.approx((1.0, 1.0), rel=rel)
    assert first[b] == pytest.approx((0.0, 1.0), rel=rel)
    assert first[c] == pytest.approx((0.0, 1.0), rel=rel)
    home = _stored(client, settings, items, "surface=home")
    assert home == {a: pytest.approx((1.0, 0.0)), b: pytest.approx((0.0, 1.0))}
    assert posterior.prior_alpha == 1.0  # serving adds the prior: Beta(1 + S, 1 + F)

    # Every input again (a producer retry, a replayed partition): nothing changes.
    produce(settings, "impressions", slates)
    produce(settings, "events", encoded([*rewards, closing]))
    wait_for(
        lambda: consumed(settings, ["impressions", "events", "bandit-outcomes"]), what="consumed"
    )
    assert _stored(client, settings, items, "*") == first
    assert _stored(client, settings, items, "surface=home") == home
