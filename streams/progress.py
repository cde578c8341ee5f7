"""How far behind the worker is: committed offsets of its consumer group against the topics' ends,
and the offline rows still waiting in its outboxes (``streams.sinks``).

Used by the demo and the tests to wait until everything published has been applied, without
sleeping for a guessed time.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence

from confluent_kafka import Consumer, KafkaError, TopicPartition
from tqdm import tqdm

from core.errors import DependencyUnavailable
from core.settings import Settings

WORKER_INPUTS = ("events", "items", "impressions", "item-updates")


def group_offsets(settings: Settings, topics: list[str]) -> tuple[int, int]:
    """``(committed, end)``: the worker's consumer group's committed offsets and the topics' end
    offsets, each summed over every partition of ``topics`` (a partition never committed counts
    0; a topic that does not exist yet, nothing). Reads, never commits."""
    consumer = _consumer(settings, settings.consumer_group)
    try:
        metadata = consumer.list_topics(timeout=10).topics
        partitions = [
            TopicPartition(t, p) for t in topics if t in metadata for p in metadata[t].partitions
        ]
        committed = consumer.committed(partitions, timeout=10) if partitions else []
        ends = end_offsets(consumer, [(tp.topic, tp.partition) for tp in partitions])
        done = end = 0
        for tp in committed:
            high = ends[tp.topic, tp.partition]
            done += min(max(tp.offset, 0), high)
            end += high
        return done, end
    finally:
        consumer.close()


def end_offsets(
    consumer: Consumer, partitions: Sequence[tuple[str, int]], timeout_s: float = 10.0
) -> dict[tuple[str, int], int]:
    """The offset after each partition's last record, from a fetch at its end.

    Not the broker's ListOffsets answer alone: Tansu 0.6 answers it with the base offset of the
    partition's last record *batch* plus one, short of the end by the rest of that batch
    (``features.traffic_log.read_topic``), while the high watermark its fetch responses carry is
    right. So each partition is read from its last listed record to the end-of-partition signal,
    whose offset is the end: at most one batch per partition. The consumer is left unassigned.
    """
    if not partitions:
        return {}
    listed = {
        tp: consumer.get_watermark_offsets(TopicPartition(*tp), timeout=timeout_s)[1]
        for tp in partitions
    }
    consumer.assign([TopicPartition(t, p, max(0, listed[t, p] - 1)) for t, p in partitions])
    ends: dict[tuple[str, int], int] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while len(ends) < len(listed):
            if time.monotonic() > deadline:
                raise DependencyUnavailable(
                    "kafka", "no end-of-partition signal within the timeout"
                )
            for message in consumer.consume(10_000, timeout=0.02):
                error = message.error()
                if error is not None and error.code() == KafkaError._PARTITION_EOF:
                    ends[message.topic(), message.partition()] = message.offset()
                elif error is not None:
                    raise DependencyUnavailable("kafka", str(error))
    finally:
        consumer.unassign()
    return ends


def _consumer(settings: Settings, group: str) -> Consumer:
    """A consumer that reads offsets and ends; it never commits or joins ``group``."""
    return Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": group,
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 10,
        }
    )


class StepProgress:
    """How far one stream step is through a topic, as its state store records it.

    Each stateful step commits the next offset it has to consume of every source partition in
    the transaction that stores its state (``streams.state_port``), so a step is through a
    topic's records the moment its last batch is committed: exact, where the consumer group's
    Kafka commits follow every ``broker_commit_interval``, and one Redis read per check, where
    the workers' metrics are a page each to render and parse. The benchmark waits on it. (A
    record the ``interactions`` agent re-routes to its key's partition is committed there, not
    where it was produced: ``streams.routing``.)"""

    def __init__(self, settings: Settings) -> None:
        from streams.statestore import RedisStateStore

        self._store = RedisStateStore(settings.redis, settings.deployment)
        self._kafka = _consumer(settings, "aether-progress")

    def ends(self, topic: str) -> dict[tuple[str, int], int]:
        """The end offset of every partition of ``topic`` (:func:`end_offsets`; empty if the
        topic does not exist)."""
        found = self._kafka.list_topics(topic, timeout=10).topics.get(topic)
        if found is None or found.error is not None:
            return {}
        return end_offsets(self._kafka, [(topic, p) for p in sorted(found.partitions)])

    def behind(self, consumer: str, ends: dict[tuple[str, int], int]) -> int:
        """Records before ``ends`` that step ``consumer`` (``state_port.CONSUMERS``) has not
        committed, summed over the partitions."""
        done = self._store.load_offsets(consumer, ends)
        return sum(max(0, end - done.get(tp, 0)) for tp, end in ends.items())

    def close(self) -> None:
        self._kafka.close()
        self._store.close()


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
