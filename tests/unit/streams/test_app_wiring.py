"""``streams.app`` wiring, without a broker: which agent consumes what, and Faust's hooks."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP
from mode.utils.queues import FlowControlEvent, FlowControlQueue

from core.settings import Settings
from streams.app import (
    _LowLatencyConsumer,
    _PerBatchMonitor,
    _UnthreadedBuffer,
    create_app,
    create_floor_app,
    poll_records,
)
from streams.eager import EagerWaitFirst
from streams.topics import TopicNames


def settings(tmp_path: Path) -> Settings:
    return Settings(namespace="unit", data_dir=tmp_path)


def topics_by_agent(app: Any) -> dict[str, set[str]]:
    return {name: set(agent.channel.topics) for name, agent in app.agents.items()}


async def nothing(records: Any) -> None:
    return None


def worker_app(s: Settings) -> Any:
    runtime = SimpleNamespace(
        topics=TopicNames.for_settings(s),
        on_interactions=nothing,
        on_impressions=nothing,
        on_catalog=nothing,
        on_item_updates=nothing,
    )
    bandit = SimpleNamespace(on_attribution=nothing, on_outcomes=nothing)
    return create_app(s, runtime, bandit)  # type: ignore[arg-type]


def test_each_user_keyed_record_crosses_faust_once(tmp_path: Path) -> None:
    s = settings(tmp_path)
    topics = TopicNames.for_settings(s)
    app = worker_app(s)
    assert topics_by_agent(app) == {
        "interactions": {topics.events, topics.privacy, topics.impressions},
        "catalog": {topics.items},
        "item_features": {topics.item_updates},
        "bandit_posteriors": {topics.bandit_outcomes},
    }
    assert app.transport.Consumer is _LowLatencyConsumer
    assert issubclass(_LowLatencyConsumer, EagerWaitFirst)
    assert isinstance(app.monitor, _PerBatchMonitor)


def test_the_floor_worker_only_consumes_events(tmp_path: Path) -> None:
    s = settings(tmp_path)
    app = create_floor_app(s)
    assert topics_by_agent(app) == {"floor": {TopicNames.for_settings(s).events}}
    assert app.transport.Consumer is _LowLatencyConsumer


def test_the_monitor_keeps_what_fausts_stall_check_reads() -> None:
    monitor = _PerBatchMonitor()
    tp = TP("unit.events", 0)
    monitor.on_message_in(tp, 7, SimpleNamespace())
    assert monitor.on_stream_event_in(tp, 7, SimpleNamespace(), SimpleNamespace()) is None
    assert tp in monitor.stream_inbound_time
    assert monitor.messages_received_total == 0  # the per-message bookkeeping is skipped


def test_the_queue_and_the_poll_are_sized_by_the_settings(tmp_path: Path) -> None:
    s = Settings(namespace="unit", data_dir=tmp_path, stream={"buffer_events": 1000})
    for app in (worker_app(s), create_floor_app(s)):
        assert app.conf.stream_buffer_maxsize == 1000
        assert app.conf.broker_max_poll_records == poll_records(1000) == 200


@pytest.mark.parametrize("size", [16, 1000, 4096, 32_768, 100_003])
def test_a_poll_that_starts_before_the_pause_fits_in_the_queue(size: int) -> None:
    """As Faust's conductor delivers: a full queue would send the delivery the slow way."""
    queue: FlowControlQueue[int] = FlowControlQueue(maxsize=size, flow_control=FlowControlEvent())
    paused: list[bool] = []

    def deliver() -> None:
        assert not queue.full()
        queue.put_nowait_enhanced(
            0, on_pressure_high=lambda: paused.append(True), on_pressure_drop=lambda: None
        )

    while queue.qsize() < queue.pressure_high_size - 1:  # the last size that polls again
        deliver()
    assert not paused
    for _ in range(poll_records(size)):  # the largest poll, all of it delivered
        deliver()
    assert paused  # and the partition is paused for the next poll


def test_the_producer_buffer_counts_what_waits_without_a_settings_lookup(tmp_path: Path) -> None:
    async def check() -> None:
        app = create_floor_app(settings(tmp_path))
        buffer = app.producer.buffer
        assert isinstance(buffer, _UnthreadedBuffer) and buffer.app is app
        assert buffer.size == 0
        buffer.pending.put_nowait(SimpleNamespace())  # what Faust's ``put`` does, unthreaded
        assert buffer.size == 1
        await buffer.wait_until_ebb()  # under max_messages: returns at once

    asyncio.run(check())
