"""How far behind the worker is: committed offsets of its consumer group against the topics' ends,
and the offline rows still waiting in its outboxes (``streams.sinks``).

Used by the demo and the tests to wait until everything published has been applied, without
sleeping for a guessed time.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence

from confluent_kafka import Consumer, TopicPartition
from tqdm import tqdm

from core.errors import DependencyUnavailable
from core.settings import Settings

WORKER_INPUTS = ("events", "items", "impressions", "item-updates")


def group_offsets(settings: Settings, topics: list[str]) -> tuple[int, int]:
    """``(committed, end)``: the worker's consumer group's committed offsets and the topics' end
    offsets, each summed over every partition of ``topics`` (a partition never committed counts
    0; a topic that does not exist yet, nothing). Reads, never commits."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": settings.consumer_group,
            "enable.auto.commit": False,
        }
    )
    try:
        metadata = consumer.list_topics(timeout=10).topics
        partitions = [
            TopicPartition(t, p) for t in topics if t in metadata for p in metadata[t].partitions
        ]
        committed = consumer.committed(partitions, timeout=10) if partitions else []
        done = end = 0
        for tp in committed:
            _low, high = consumer.get_watermark_offsets(tp, timeout=10)
            done += min(max(tp.offset, 0), high)
            end += high
        return done, end
    finally:
        consumer.close()


def offline_pending(settings: Settings) -> int:
    """Outbox entries (batches' offline rows) the worker has not moved into parquet yet."""
    from streams.statestore import RedisStateStore

    store = RedisStateStore(settings.redis, settings.deployment)
    try:
        return store.offline_pending()
    finally:
        store.close()


def wait_until_caught_up(
    settings: Settings,
    stall_s: float,
    *,
    progress: bool = False,
    inputs: Sequence[str] = WORKER_INPUTS,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Block until the worker has committed everything on its ``inputs`` (topic names without
    the namespace; by default all of them) and flushed its offline rows into parquet.

    Raises ``DependencyUnavailable`` when the worker has committed nothing new for ``stall_s``
    seconds while still behind: a slow or busy machine only makes the wait longer, a stuck or
    dead worker ends it."""
    topics = [settings.topic(t) for t in inputs]
    bar = None
    best = -1
    fewest_pending = sys.maxsize
    last_progress = clock()
    while True:
        done, end = group_offsets(settings, topics)
        lag = end - done
        if lag <= 0:
            # Then the outboxes, which the worker flushes every ``stream.offline_flush_s``.
            pending = offline_pending(settings)
            if pending == 0:
                break
            if pending < fewest_pending:
                fewest_pending, last_progress = pending, clock()
        if done > best:
            best, last_progress = done, clock()
        if progress and bar is None:
            bar = tqdm(total=lag, desc="worker", unit="msg")
        if bar is not None:
            bar.total = max(bar.total, bar.n + lag)  # item updates are produced as it goes
            bar.update(max(0, bar.total - lag - bar.n))
        if clock() - last_progress > stall_s:
            raise DependencyUnavailable(
                "worker",
                f"still {lag} messages behind (and {offline_pending(settings)} offline batches"
                f" not flushed), and nothing committed in the last {stall_s:.0f}s",
            )
        sleep(1.0)
    if bar is not None:
        bar.update(bar.total - bar.n)
        bar.close()
