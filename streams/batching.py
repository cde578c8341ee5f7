"""Batches that close when the stream runs dry: low latency when idle, big batches under load.

Faust's ``Stream.take_events(max_, within)`` closes a batch when it holds ``max_`` events or when
``within`` seconds have passed. Below saturation the second case is the rule, so every event waits
for the rest of the window before any feature is written: with the worker's 50 ms window that was
most of the measured freshness (``docs/benchmarks/ingest.md``), and a shorter window costs
throughput under load (more, smaller batches while the backlog is large).

:func:`take_available` closes a batch as soon as the stream's queue is empty — every event the
consumer has fetched so far is in it — or when it holds ``max_size`` events. An idle worker thus
answers each fetch at once, while a busy one finds more events queued every time it comes back
from the previous batch, so its batches grow by themselves ("natural batching"). ``within``
remains only as an upper bound on waiting, a safety net that never fires while the stream moves.

**Catching up** (``CatchUp``): a batch whose first record was appended to the broker more than
``lag_s`` ago takes up to ``CatchUp.max_size`` events instead of ``max_size``. Near real time,
a small cap keeps each batch's handling short, so a record that arrives during a hiccup does not
wait behind a long batch (measured: freshness p99 at half the sustained rate rose with the cap,
``docs/benchmarks/ingest.md``); in a backlog, whose freshness is gone already, bigger batches
share each batch's fixed costs (Redis round trips, parquet appends, the drift monitors' states)
among more events.

**Read from the stream's queue, not through its iterator.** Faust hands each fetched event to an
agent through the stream's per-event iterator: a trip round the event loop (``sleep(0)``), an
``await`` on the queue and on every processor, and the ack bookkeeping, for every event. That was
about half of what Faust costs per event here (``aether bench ingest --faust-floor``,
``docs/benchmarks/ingest.md``, session 28). :func:`take_available` instead takes what is queued
on the stream's channel in one synchronous sweep and does, once per batch, what the iterator does
per event (:class:`_Admission`): it drops events fetched before the last rebalance or while the
flow is suspended (neither handled nor acked, as Faust drops them), marks the others pending ack
with the consumer (so a rebalance waits for the batch in hand), and tells the sensors a stream
took them.

**Lingering** (``linger_s``, for agents whose freshness matters less than their per-batch cost):
a batch is taken no earlier than ``linger_s`` after its first record was appended (the record's
timestamp; a record older than that is taken at once, so a backlog never waits). The item-features
and bandit-outcome agents linger (``AETHER_STREAM__LINGER_S``): they get one small batch of
forwarded updates per batch of the interactions agent, and near real time each paid every fixed
cost of a batch (Redis round trips, a feature write, an outbox entry) for a few dozen updates. The
interactions agent never lingers: user features are what freshness is.

Acknowledgement is as Faust's: every event of a batch is acked after the consumer asks for the
next batch (or leaves the loop), so a crash mid-batch re-delivers it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from faust.types import EventT, StreamT


@dataclass(frozen=True, slots=True)
class CatchUp:
    """Batches whose first record is older than ``lag_s`` (broker time) take up to ``max_size``."""

    max_size: int
    lag_s: float


async def take_available(
    stream: StreamT[Any],
    max_size: int,
    within: float,
    *,
    catch_up: CatchUp | None = None,
    linger_s: float = 0.0,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> AsyncIterator[list[EventT[Any]]]:
    """Yield the stream's events in batches of 1…``max_size`` (or 1…``catch_up.max_size`` when
    catching up), each as soon as nothing is queued (and, with ``linger_s``, no earlier than
    ``linger_s`` after its first record was appended)."""
    if max_size < 1 or (catch_up is not None and catch_up.max_size < 1):
        raise ValueError(f"batch sizes must be at least 1, got {max_size} and {catch_up}")
    if linger_s < 0:
        raise ValueError(f"linger_s must not be negative, got {linger_s}")
    queue = stream.channel.queue  # type: ignore[attr-defined]
    admit = _Admission(stream)
    wait_first = stream.wait_first  # type: ignore[attr-defined]  # mode's Service method
    started = await stream.maybe_start()
    try:
        while not stream.should_stop:
            if queue.empty():
                got = await wait_first(queue.get(), timeout=within)
                if not got.results:  # the window passed, or the stream stops
                    continue
                events = [got.results[0]]
            else:
                events = [queue.get_nowait()]
            limit = max_size
            appended = events[0].message.timestamp  # seconds, the broker's record timestamp
            if catch_up is not None and appended and clock() - appended > catch_up.lag_s:
                limit = max(max_size, catch_up.max_size)
            if linger_s and queue.qsize() + 1 < limit:
                wait = min(linger_s, appended + linger_s - clock()) if appended else linger_s
                if wait > 0:
                    await sleep(wait)
            while len(events) < limit and not queue.empty():
                events.append(queue.get_nowait())
            batch = admit(events)
            if not batch:
                continue
            try:
                yield batch
            finally:
                admit.ack(batch)
    except StopAsyncIteration:
        # How Faust stops an agent (``Actor.cancel``): thrown into the queue, raised by the next
        # get. Events taken but not handed out are not acked: whoever owns them next gets them.
        return
    finally:
        if started:
            await stream.stop()
            stream.service_reset()


class _Admission:
    """What Faust's stream iterator does per event, done per batch: drop events fetched before
    the last rebalance (or while the flow is suspended), track the rest as pending ack, and ack
    them when the batch is done."""

    def __init__(self, stream: StreamT[Any]) -> None:
        self.stream = stream
        self.app = stream.app
        self.consumer = self.app.consumer
        self.acking_topics = self.app.topics.acking_topics

    def __call__(self, events: list[Any]) -> list[EventT[Any]]:
        app = self.app
        if not app.flow_control.is_active():
            return []
        generation = app.consumer_generation_id
        admitted = []
        last: dict[Any, EventT[Any]] = {}
        for event in events:
            if not isinstance(event, EventT):
                raise TypeError(f"take_available reads events, got a {type(event).__name__}")
            message = event.message
            if message.generation_id != generation:
                continue
            if not message.tracked and message.topic in self.acking_topics:
                message.tracked = True
                self.consumer.track_message(message)
            last[message.tp] = event
            admitted.append(event)
        on_in = self.stream._on_stream_event_in  # type: ignore[attr-defined]
        for tp, event in last.items():
            on_in(tp, event.message.offset, self.stream, event)
        return admitted

    def ack(self, batch: list[EventT[Any]]) -> None:
        stream = self.stream
        on_out = stream._on_stream_event_out  # type: ignore[attr-defined]
        on_message_out = stream._on_message_out  # type: ignore[attr-defined]
        for event in batch:
            message = event.message
            last = event.ack()
            on_out(message.tp, message.offset, stream, event)
            if last:
                on_message_out(message.tp, message.offset, message)
