"""Composition root of the stream worker: settings → adapters → runtimes (``aether worker``)."""

from __future__ import annotations

import redis

from core.settings import Settings
from features.store import FeastOnlineStore
from streams.agents import StreamRuntime, now_ms
from streams.bandit_agent import BanditRuntime
from streams.sinks import StreamSinks
from streams.statestore import RedisStateStore


def build_runtimes(settings: Settings) -> tuple[StreamRuntime, BanditRuntime]:
    """The feature runtime (with offline log, history, transitions, privacy) and the bandit one."""
    client = redis.Redis.from_url(settings.redis.url.get_secret_value())
    state = RedisStateStore(settings, client)
    runtime = StreamRuntime(
        settings,
        writer=FeastOnlineStore(settings),
        state=state,
        sinks=StreamSinks(settings, client),
    )
    bandit = BanditRuntime(
        settings,
        client=client,
        state=state,
        producer=runtime.producer,
        policy=runtime.policy,
        now_ms=now_ms,
    )
    return runtime, bandit
