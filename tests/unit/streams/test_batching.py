"""``streams.batching.take_available`` over a real Faust stream on an in-memory channel.

No broker is contacted: the app's broker URL is only parsed (the stream's ack path builds the
consumer object, which connects only when started).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import faust
import pytest

from streams.batching import CatchUp, take_available

GUARD_S = 20.0  # fails the test instead of hanging it; far below the 600 s batch window used


def new_stream() -> tuple[Any, Any]:
    app = faust.App(
        "unit-take-available",
        broker="kafka://127.0.0.1:9",
        store="memory://",
        web_enabled=False,
        autodiscover=False,
    )
    app.flow_control.resume()  # the app is never started; let the channel queues accept
    channel = app.channel(maxsize=1000)
    return channel, channel.stream()


async def send(channel: Any, values: range, timestamp: float | None = None) -> None:
    for value in values:
        await channel.send(value=value, timestamp=timestamp)


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), GUARD_S))


async def batches_of(stream: Any, max_size: int, total: int) -> AsyncIterator[list[Any]]:
    seen = 0
    async for events in take_available(stream, max_size, within=600):
        yield events
        seen += len(events)
        if seen >= total:
            return


def test_a_partial_batch_is_handed_over_when_the_queue_runs_dry_not_after_the_window() -> None:
    async def test() -> None:
        channel, stream = new_stream()
        async with stream:
            await send(channel, range(3))
            async for events in batches_of(stream, 500, total=3):
                assert [e.value for e in events] == [0, 1, 2]

    run(test)


def test_batches_keep_order_and_never_exceed_max_size() -> None:
    async def test() -> None:
        channel, stream = new_stream()
        async with stream:
            await send(channel, range(25))
            sizes, values = [], []
            async for events in batches_of(stream, 10, total=25):
                sizes.append(len(events))
                values.extend(e.value for e in events)
            assert sizes == [10, 10, 5]
            assert values == list(range(25))

    run(test)


def test_events_arriving_while_a_batch_is_handled_go_to_the_next_batch() -> None:
    async def test() -> None:
        channel, stream = new_stream()
        async with stream:
            await send(channel, range(2))
            batches = []
            async for events in batches_of(stream, 500, total=6):
                if not batches:
                    await send(channel, range(2, 6))
                    await asyncio.sleep(0)  # let the stream run while the batch is in hand
                    assert [e.value for e in events] == [0, 1]
                batches.append([e.value for e in events])
            assert batches == [[0, 1], [2, 3, 4, 5]]

    run(test)


def test_a_batch_is_acked_only_when_the_next_one_is_asked_for() -> None:
    async def test() -> None:
        channel, stream = new_stream()
        async with stream:
            await send(channel, range(4))
            held: list[Any] = []
            async for events in batches_of(stream, 2, total=4):
                assert not any(e.message.acked for e in events)  # in hand: not acked
                assert all(e.message.acked for e in held)  # the previous batch: acked
                held = list(events)

    run(test)


def test_max_size_must_be_positive() -> None:
    async def test() -> None:
        _, stream = new_stream()
        with pytest.raises(ValueError, match="batch sizes must be at least 1"):
            async for _ in take_available(stream, 0, within=1):
                pass

    run(test)


@pytest.mark.parametrize(
    ("appended_s_ago", "sizes"),
    [
        (0.5, [10, 10, 5]),  # near real time: the small cap
        (5.0, [20, 5]),  # a backlog: the catching-up cap
    ],
)
def test_a_batch_whose_first_record_is_old_takes_the_catching_up_size(
    appended_s_ago: float, sizes: list[int]
) -> None:
    now = 1_800_000_000.0

    async def test() -> None:
        channel, stream = new_stream()
        async with stream:
            await send(channel, range(25), timestamp=now - appended_s_ago)
            seen, got = 0, []
            catch_up = CatchUp(max_size=20, lag_s=1.0)
            async for events in take_available(
                stream, 10, within=600, catch_up=catch_up, clock=lambda: now
            ):
                got.append(len(events))
                seen += len(events)
                if seen >= 25:
                    break
            assert got == sizes

    run(test)


@pytest.mark.parametrize(
    ("appended_s_ago", "slept", "values"),
    [
        (0.03, [pytest.approx(0.07)], [0, 1, 2, 3]),  # fresh: waits out the rest of the linger
        (0.5, [], [0, 1]),  # older than the linger (a backlog): taken at once
    ],
)
def test_a_lingering_batch_waits_until_its_first_record_is_linger_s_old(
    appended_s_ago: float, slept: list[float], values: list[int]
) -> None:
    now = 1_800_000_000.0

    async def test() -> None:
        channel, stream = new_stream()
        waits: list[float] = []

        async def sleep(seconds: float) -> None:  # records arriving while the batch lingers
            waits.append(seconds)
            await send(channel, range(2, 4), timestamp=now)

        async with stream:
            await send(channel, range(2), timestamp=now - appended_s_ago)
            batches = take_available(
                stream, 500, within=600, linger_s=0.1, clock=lambda: now, sleep=sleep
            )
            events = await anext(batches)
            assert [e.value for e in events] == values
            assert waits == slept
            await batches.aclose()

    run(test)


def test_a_full_batch_does_not_linger_and_linger_is_not_negative() -> None:
    now = 1_800_000_000.0

    async def never(seconds: float) -> None:
        raise AssertionError(f"slept {seconds} s with a full batch queued")

    async def test() -> None:
        channel, stream = new_stream()
        async with stream:
            await send(channel, range(3), timestamp=now)
            batches = take_available(
                stream, 3, within=600, linger_s=0.1, clock=lambda: now, sleep=never
            )
            assert [e.value for e in await anext(batches)] == [0, 1, 2]
            await batches.aclose()
            with pytest.raises(ValueError, match="linger_s must not be negative"):
                await anext(take_available(stream, 3, within=600, linger_s=-1))

    run(test)


def test_events_fetched_before_a_rebalance_are_dropped_unacked() -> None:
    async def test() -> None:
        channel, stream = new_stream()
        async with stream:
            await send(channel, range(3))  # fetched in the old generation
            stream.app.consumer_generation_id += 1  # a rebalance happened meanwhile
            await send(channel, range(3, 5))
            stale = list(stream.channel.queue._queue)[:3]
            batches = []
            async for events in batches_of(stream, 500, total=3):
                batches.append([e.value for e in events])
                if len(batches) == 1:
                    await send(channel, range(5, 6))
                    first = events
            assert batches == [[3, 4], [5]]
            assert all(e.message.acked for e in first)  # handled, then acked
            assert not any(e.message.acked for e in stale)  # neither handled nor acked

    run(test)


def test_a_batch_in_hand_is_pending_ack_with_the_consumer() -> None:
    async def test() -> None:
        channel, stream = new_stream()
        app = stream.app
        async with stream:
            await send(channel, range(2))
            for event in stream.channel.queue._queue:  # as a topic's fetched records arrive
                event.message.tracked = False
            app.topics.acking_topics.add(None)  # an in-memory channel's records have no topic
            async for events in batches_of(stream, 500, total=2):
                # what a rebalance waits for (``Consumer.wait_empty``)
                assert set(app.consumer._unacked_messages) == {e.message for e in events}

    run(test)


def test_while_the_flow_is_suspended_nothing_is_handed_over() -> None:
    async def test() -> None:
        channel, stream = new_stream()
        async with stream:
            await send(channel, range(2))
            stream.app.flow_control.suspend()
            batches = take_available(stream, 500, within=0.05)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(anext(batches), 0.3)
            assert stream.channel.queue.empty()  # taken, and dropped

    run(test)


def test_the_batches_end_when_faust_stops_the_agent() -> None:
    async def test() -> None:
        channel, stream = new_stream()
        async with stream:
            await send(channel, range(2))
            got = []
            async for events in take_available(stream, 500, within=600):
                got.append([e.value for e in events])
                stream.channel._throw(StopAsyncIteration())  # what ``Actor.cancel`` does
            assert got == [[0, 1]]
            assert all(e.message.acked for e in events)

    run(test)


def test_an_agent_waiting_for_events_ends_when_faust_stops_it() -> None:
    async def test() -> None:
        _, stream = new_stream()
        async with stream:

            async def stop_soon() -> None:
                await asyncio.sleep(0.05)
                stream.channel._throw(StopAsyncIteration())

            stopper = asyncio.ensure_future(stop_soon())
            batches = [events async for events in take_available(stream, 500, within=600)]
            await stopper
            assert batches == []

    run(test)
