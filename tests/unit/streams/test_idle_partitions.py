"""The idleness rule (issue 21), per input topic: an input (impressions or events of one
partition) without records for longer than ``idle_partition_timeout_s`` (wall time) stops holding
back attribution. Its watermark moves up to its partition's active inputs' smallest watermark, or
all active inputs' when the whole partition is idle."""

from __future__ import annotations

import asyncio
import itertools

import orjson

from bandits.attribution import AttributionConfig, AttributionState, Input
from core.settings import Settings, StreamSettings
from streams.bandit_agent import BanditRuntime
from streams.bandit_steps import BanditConfig, BanditSteps, idle_inputs_step
from streams.handlers import SourceRecord
from streams.state_port import AttributionHead, InMemoryStateStore
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

    def produce(
        self, topic: str, value: bytes, key: bytes | None = None, partition: int = -1
    ) -> None:
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


def _click(partition: int, item: str, t: int) -> SourceRecord:
    body = interaction(f"c{t}", f"user-{partition}", item, "click", t)
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
    marks = runtime.state.load_attribution([0])[0]["watermarks"]
    assert marks == {"events": T0 + 3 * WINDOW, "impressions": T0 + 3 * WINDOW}


def test_before_the_timeout_or_with_the_rule_off_the_idle_partition_holds_back() -> None:
    runtime, clock = _runtime(timeout_s=60.0)
    assert _run(runtime, clock) == []
    off, off_clock = _runtime(timeout_s=0.0)
    assert _run(off, off_clock) == []


def test_nothing_moves_while_every_input_is_idle() -> None:
    heads = {0: AttributionHead("v1", {Input.EVENTS: T0})}
    idle = [(source, p) for p in (0, 1) for source in Input]

    def state_of(partition: int) -> AttributionState:
        raise AssertionError(f"partition {partition}'s state read although nothing moves")

    effects = idle_inputs_step(heads, idle=idle, active=[], config=CONFIG, state_of=state_of)
    assert effects.commit.is_empty() and not effects.outcomes


def test_idleness_is_judged_per_input_topic() -> None:
    runtime, clock = _runtime(timeout_s=30.0)
    asyncio.run(runtime.on_attribution([_slate(0, "r0", T0), _view(0, T0)]))
    clock.now = 40.0
    idle, active = runtime.idle_split([_slate(0, "r1", T0 + 1)])
    assert (idle, active) == ([(Input.EVENTS, 0)], [(Input.IMPRESSIONS, 0)])


def test_a_quiet_events_topic_stops_holding_back_its_partitions_windows() -> None:
    """Partition 0's impressions move on while its events stop: after the timeout the events
    watermark follows the impressions one, and the first slate's window is decided."""
    for timeout_s, decided in ((30.0, ["r0|a"]), (60.0, [])):
        runtime, clock = _runtime(timeout_s)
        outcomes = asyncio.run(runtime.on_attribution([_slate(0, "r0", T0), _view(0, T0)]))
        clock.now = 40.0
        outcomes += asyncio.run(runtime.on_attribution([_slate(0, "r1", T0 + 3 * WINDOW)]))
        assert [o.outcome_id for o in outcomes] == decided
        marks = runtime.state.load_attribution([0])[0]["watermarks"]
        assert marks["events"] == (T0 + 3 * WINDOW if decided else T0)


def test_a_quiet_impressions_topic_stops_holding_back_the_reward_buffer() -> None:
    """A partition that shows no slate keeps its clicks buffered for a slate that may still come,
    until its impressions topic has been idle for the timeout; the buffer is bounded then."""
    runtime, clock = _runtime(timeout_s=30.0)
    asyncio.run(runtime.on_attribution([_click(0, "a", T0)]))
    clock.now = 5.0
    asyncio.run(runtime.on_attribution([_view(0, T0 + 3 * WINDOW)]))
    assert list(runtime.state.load_attribution([0])[0]["rewards"]) == [f"c{T0}"]
    clock.now = 40.0
    asyncio.run(runtime.on_attribution([_view(0, T0 + 4 * WINDOW)]))
    snapshot = runtime.state.load_attribution([0])[0]
    assert snapshot["rewards"] == {}
    assert snapshot["watermarks"] == {"events": T0 + 4 * WINDOW, "impressions": T0 + 4 * WINDOW}


def test_the_setting_defaults_to_thirty_seconds_and_zero_turns_it_off() -> None:
    assert StreamSettings().idle_partition_timeout_s == 30.0
    assert StreamSettings(idle_partition_timeout_s=0).idle_partition_timeout_s == 0


def test_an_input_without_records_yet_counts_from_its_partitions_first_record() -> None:
    """A worker that waits long for its first records must not take the other topic of their
    partition for idle at once: its watermark would jump ahead and make that topic's records
    late."""
    runtime, clock = _runtime(timeout_s=30.0)
    clock.now = 100.0  # a slow start: 100 s before partition 0's first record
    assert runtime.idle_split([_slate(0, "r0", T0)]) == (
        [],
        [(Input.EVENTS, 0), (Input.IMPRESSIONS, 0)],
    )
    clock.now = 131.0
    assert runtime.idle_split([_slate(0, "r1", T0)]) == (
        [(Input.EVENTS, 0)],
        [(Input.IMPRESSIONS, 0)],
    )


def test_the_idle_inputs_are_exported_for_operators() -> None:
    from streams.worker_metrics import ATTRIBUTION_IDLE_INPUTS

    runtime, clock = _runtime(timeout_s=30.0)
    asyncio.run(runtime.on_attribution([_slate(0, "r0", T0), _view(0, T0)]))
    clock.now = 40.0
    asyncio.run(runtime.on_attribution([_slate(0, "r1", T0 + 1)]))  # events quiet for 40 s
    assert ATTRIBUTION_IDLE_INPUTS.labels("events")._value.get() == 1
    assert ATTRIBUTION_IDLE_INPUTS.labels("impressions")._value.get() == 0
