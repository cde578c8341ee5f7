"""The idleness rule (issue 21, item 3): a partition without records for longer than
``idle_partition_timeout_s`` (wall time) stops holding back attribution; the active partitions'
smallest watermark decides its pending impressions."""

from __future__ import annotations

import asyncio
import itertools

import orjson

from bandits.attribution import AttributionConfig
from core.settings import Settings, StreamSettings
from streams.bandit_agent import BanditRuntime
from streams.bandit_steps import BanditConfig, BanditSteps, idle_partitions_step
from streams.handlers import SourceRecord
from streams.state_port import InMemoryStateStore
from streams.testing import interaction
from streams.topics import TopicNames

T0 = 1_700_000_000_000
TOPICS = TopicNames.for_settings(Settings(namespace="unit"))
WINDOW = 10 * 60_000
CONFIG = BanditConfig(TOPICS, attribution=AttributionConfig(window_ms=WINDOW))
_OFFSETS = itertools.count()


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    def produce(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        self.sent.append((topic, value))

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        return 0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _slate(partition: int, request_id: str, t: int) -> SourceRecord:
    body = {
        "request_id": request_id,
        "user_id": f"user-{partition}",
        "event_time": t,
        "model_version": "m",
        "items": [
            {"item_id": "a", "position": 0, "score": 1.0, "source": "ann", "propensity": 0.5}
        ],
    }
    return SourceRecord(TOPICS.impressions, partition, next(_OFFSETS), orjson.dumps(body))


def _view(partition: int, t: int) -> SourceRecord:
    body = interaction(f"v{t}", f"user-{partition}", "z", "view", t)
    return SourceRecord(TOPICS.events, partition, next(_OFFSETS), orjson.dumps(body))


def _runtime(timeout_s: float) -> tuple[BanditRuntime, Clock]:
    clock = Clock()
    runtime = BanditRuntime(
        BanditSteps(CONFIG),
        state=InMemoryStateStore(),
        producer=FakeProducer(),  # type: ignore[arg-type]
        now_ms=lambda: T0 + 10 * WINDOW,
        idle_timeout_s=timeout_s,
        wall_clock=clock,
    )
    return runtime, clock


def _run(runtime: BanditRuntime, clock: Clock) -> list[str]:
    """Partition 0 shows a slate and goes quiet; partition 1 moves on past its window."""
    decided = asyncio.run(runtime.on_attribution([_slate(0, "r0", T0), _view(1, T0)]))
    clock.now = 5.0
    decided += asyncio.run(runtime.on_attribution([_view(1, T0 + 2 * WINDOW)]))
    clock.now = 40.0
    decided += asyncio.run(runtime.on_attribution([_view(1, T0 + 3 * WINDOW)]))
    return [o.outcome_id for o in decided]


def test_an_idle_partition_is_advanced_by_the_active_ones_after_the_timeout() -> None:
    runtime, clock = _runtime(timeout_s=30.0)
    assert _run(runtime, clock) == ["r0|a"]  # decided in the third batch: 40 s of silence
    assert runtime.state.load_attribution([0])[0]["watermark_ms"] == T0 + 3 * WINDOW


def test_before_the_timeout_or_with_the_rule_off_the_idle_partition_holds_back() -> None:
    runtime, clock = _runtime(timeout_s=60.0)
    assert _run(runtime, clock) == []
    off, off_clock = _runtime(timeout_s=0.0)
    assert _run(off, off_clock) == []


def test_nothing_moves_while_every_partition_is_idle() -> None:
    snapshots = {0: {"watermark_ms": T0, "pending": [], "rewards": {}, "seen": {}}}
    effects = idle_partitions_step(snapshots, idle=[0, 1], active=[], config=CONFIG)
    assert effects.commit.is_empty() and not effects.outcomes


def test_the_setting_defaults_to_thirty_seconds_and_zero_turns_it_off() -> None:
    assert StreamSettings().idle_partition_timeout_s == 30.0
    assert StreamSettings(idle_partition_timeout_s=0).idle_partition_timeout_s == 0
