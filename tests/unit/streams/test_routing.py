"""Kafka's murmur2 and the split of records off their key's partition (``streams.routing``)."""

from __future__ import annotations

import pytest

from streams.handlers import SourceRecord
from streams.partitioning import murmur2, partition_for_key
from streams.routing import misrouted


# Kafka's own test vectors (clients' UtilsTest.testMurmur2), as signed 32-bit Java ints.
@pytest.mark.parametrize(
    ("key", "java"),
    [
        (b"21", -973932308),
        (b"foobar", -790332482),
        (b"a-little-bit-long-string", -985981536),
        (b"a-little-bit-longer-string", -1486304829),
        (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        (b"abc", 479470107),
    ],
)
def test_murmur2_matches_kafkas_test_vectors(key: bytes, java: int) -> None:
    assert murmur2(key) == java & 0xFFFFFFFF


def test_records_off_their_keys_partition_are_split_off_and_unkeyed_ones_stay() -> None:
    home = partition_for_key(b"user-1", 4)
    records = [
        SourceRecord("events", home, 0, b"{}", b"user-1"),
        SourceRecord("events", (home + 1) % 4, 1, b"{}", b"user-1"),
        SourceRecord("events", 3, 2, b"{}", None),
    ]
    kept, away = misrouted(records, 4)
    assert [r.offset for r in kept] == [0, 2] and [r.offset for r in away] == [1]
