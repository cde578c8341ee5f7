"""Records on the wrong partition for their key go to the right one (issue 21, item 1).

The ``interactions`` agent joins a user's impressions with the same user's events and privacy
requests per partition (attribution state, watermarks, the user state itself): that needs every
record of a user on one partition number, whichever client produced it. Java clients, kafkajs and
our own producers (``streams.publish.new_producer``) partition by murmur2; librdkafka's default
(CRC32) and a random partitioner do not. So before any step sees a batch, the agent splits off
the keyed records that sit on another partition than murmur2 of their key (:func:`misrouted`)
and produces them again to **the same topic, at their key's partition** (:func:`reroute`); the
steps skip them where they are and handle the copy when it arrives on its home partition. The
worker thus depends on no producer's partitioner, at the cost of a second hop for misrouted
records (none with a murmur2 producer). Records without a key stay where they are.

Limit: a re-routed record reaches its home partition later than the records produced there
directly, and lateness is judged against the home partition's watermark. In real time that
delay is one batch; in a backlog (a replay from a non-murmur2 producer, event time far ahead of
processing) records of different source partitions can interleave on the home partition more
than the allowed lateness apart, and the later ones go to ``<ns>.late-events`` (counted, not
lost). Producers that partition by murmur2 never pay this.

A crash after re-producing and before the batch's Kafka offsets are committed re-produces the
same records once more: the copies carry the same ids, which the steps de-duplicate (event ids
in the user state, request ids in the impressions step's slate memory, request and event ids in
the attribution state) within the dedup horizon.
"""

from __future__ import annotations

from collections.abc import Sequence

from confluent_kafka import Producer

from streams.handlers import SourceRecord
from streams.partitioning import partition_for_key
from streams.publish import flush_or_raise, produce_waiting


def misrouted(
    records: Sequence[SourceRecord], partitions: int
) -> tuple[list[SourceRecord], list[SourceRecord]]:
    """``(home, misrouted)``: keyed records off their key's partition go to ``misrouted``."""
    home: list[SourceRecord] = []
    away: list[SourceRecord] = []
    for record in records:
        if record.key and record.partition != partition_for_key(record.key, partitions):
            away.append(record)
        else:
            home.append(record)
    return home, away


async def reroute(producer: Producer, records: Sequence[SourceRecord], partitions: int) -> None:
    """Produce each record again to its topic at its key's partition, and wait for the acks."""
    for record in records:
        assert record.key is not None  # misrouted() only returns keyed records
        produce_waiting(
            producer,
            record.topic,
            record.value,
            record.key,
            partition=partition_for_key(record.key, partitions),
        )
    if records:
        await flush_or_raise(producer, "re-routed records")
