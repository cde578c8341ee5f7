"""Kafka's murmur2 partitioning, in pure Python: which partition a key belongs to.

Every producer the project owns partitions by murmur2 (``streams.publish.new_producer``), as Java
clients and kafkajs do. The worker needs the same answer without a producer: to find records a
non-murmur2 producer put elsewhere (``streams.routing``), and to group a batch's item updates by
the partition their item belongs to (``streams.handlers``), one message per partition.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from operator import attrgetter
from typing import TypeVar

T = TypeVar("T")

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (Java ``Utils.murmur2``, librdkafka's ``murmur2``), as an unsigned int."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = length % 4
    base = length - tail
    if tail == 3:
        h ^= data[base + 2] << 16
    if tail >= 2:
        h ^= data[base + 1] << 8
    if tail >= 1:
        h ^= data[base]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


def partition_for_key(key: bytes, partitions: int) -> int:
    """The partition a murmur2 partitioner picks for ``key`` (Java's ``toPositive`` then mod).

    Remembered per key: every record of the ``interactions`` agent is checked and every item
    update grouped, and the pure-Python hash costs a few µs; keys repeat (users, items), and the
    memory is bounded by clearing it when full.
    """
    found = _HOMES.get((key, partitions))
    if found is None:
        if len(_HOMES) >= _HOMES_LIMIT:
            _HOMES.clear()
        found = _HOMES[key, partitions] = (murmur2(key) & 0x7FFFFFFF) % partitions
    return found


_HOMES: dict[tuple[bytes, int], int] = {}
_HOMES_LIMIT = 100_000


def by_partition(
    values: Iterable[T], key_of: Callable[[T], str], partitions: int
) -> list[tuple[int, list[T]]]:
    """``values`` grouped by the partition of their key, partitions ascending, each group in the
    order of ``values`` (so one key's values keep their order within their partition)."""
    groups: dict[int, list[T]] = {}
    for value in values:
        partition = partition_for_key(key_of(value).encode(), partitions)
        group = groups.get(partition)
        if group is None:
            groups[partition] = [value]
        else:
            group.append(value)
    return sorted(groups.items())


ITEM_ID: Callable[[object], str] = attrgetter("item_id")  # key of item updates and outcomes
