"""How far behind the worker is: committed offsets of its consumer group against the topics' ends.

Used by the demo and the tests to wait until everything published has been applied, without
sleeping for a guessed time.
"""

from __future__ import annotations

import time

from confluent_kafka import Consumer, TopicPartition
from tqdm import tqdm

from core.errors import DependencyUnavailable
from core.settings import Settings

WORKER_INPUTS = ("events", "items", "impressions", "item-updates")


def committed_lag(settings: Settings, topics: list[str]) -> int:
    """Messages in ``topics`` not yet committed by the worker's consumer group."""
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": settings.consumer_group}
    )
    try:
        partitions = [
            TopicPartition(t, p) for t in topics for p in range(settings.kafka.partitions)
        ]
        committed = consumer.committed(partitions, timeout=10)
        lag = 0
        for tp in committed:
            _low, high = consumer.get_watermark_offsets(tp, timeout=10)
            lag += high - max(tp.offset, 0)
        return lag
    finally:
        consumer.close()


def wait_until_caught_up(settings: Settings, timeout_s: float, *, progress: bool = False) -> None:
    """Block until the worker has committed everything on its input topics."""
    topics = [settings.topic(t) for t in WORKER_INPUTS]
    deadline = time.monotonic() + timeout_s
    bar = None
    while (lag := committed_lag(settings, topics)) > 0:
        if progress and bar is None:
            bar = tqdm(total=lag, desc="worker", unit="msg")
        if bar is not None:
            bar.total = max(bar.total, bar.n + lag)  # item updates are produced as it goes
            bar.update(max(0, bar.total - lag - bar.n))
        if time.monotonic() > deadline:
            raise DependencyUnavailable(
                "worker", f"still {lag} messages behind after {timeout_s:.0f}s"
            )
        time.sleep(1.0)
    if bar is not None:
        bar.update(bar.total - bar.n)
        bar.close()
