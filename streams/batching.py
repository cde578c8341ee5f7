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

Acknowledgement is Faust's own: acks are off while the batch is handled, and every event of a
batch is acked after the consumer asks for the next one, so a crash mid-batch re-delivers it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
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
    clock: Callable[[], float] = time.time,
) -> AsyncIterator[list[EventT[Any]]]:
    """Yield the stream's events in batches of 1…``max_size`` (or 1…``catch_up.max_size`` when
    catching up), each as soon as nothing is queued."""
    if max_size < 1 or (catch_up is not None and catch_up.max_size < 1):
        raise ValueError(f"batch sizes must be at least 1, got {max_size} and {catch_up}")
    events: list[EventT[Any]] = []
    limit = max_size  # of the batch being filled: decided by its first event
    ready = asyncio.Event()  # a batch may be taken: the queue ran dry, or the batch is full
    taken = asyncio.Event()  # the full batch was handed out: buffering may go on
    in_hand: asyncio.Future[None] | None = None  # pending while the consumer holds a batch
    queue = stream.channel.queue  # type: ignore[attr-defined]

    async def buffer(value: Any) -> Any:
        nonlocal in_hand, limit
        if in_hand is not None:  # never add to a batch the consumer is working on
            try:
                await in_hand
            finally:
                in_hand = None
        event = stream.current_event
        if event is None:
            raise RuntimeError("take_available: the stream has no current event")
        if not events:
            limit = max_size
            if catch_up is not None:
                appended = event.message.timestamp  # seconds, the broker's record timestamp
                if appended and clock() - appended > catch_up.lag_s:
                    limit = max(max_size, catch_up.max_size)
        events.append(event)
        if len(events) >= limit:
            ready.set()
            taken.clear()
            await stream.wait(taken)  # type: ignore[arg-type]  # no more than the limit a batch
        elif queue.empty():
            ready.set()
        return value

    acks_were_enabled = stream.enable_acks
    stream.enable_acks = False  # acked below, after the consumer is done with the batch
    stream.add_processor(buffer)
    stream._enable_passive(aiter(stream.channel))  # type: ignore[attr-defined]
    try:
        while not stream.should_stop:
            await stream.wait_for_stopped(ready, timeout=within)  # type: ignore[arg-type]
            if not events:
                ready.clear()
                continue
            in_hand = asyncio.get_running_loop().create_future()
            batch = list(events)
            try:
                yield batch
            finally:
                events.clear()
                for event in batch:
                    await stream.ack(event)
                if not in_hand.done():
                    in_hand.set_result(None)
                ready.clear()
                taken.set()
    finally:
        stream.enable_acks = acks_were_enabled
