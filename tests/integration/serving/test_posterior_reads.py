"""Serving's posterior reads on real Redis: a batch of reads answers each read as it is answered
alone, directly and through serving's batcher (``RedisPosteriorReader.batch_reads``)."""

from __future__ import annotations

import uuid

import pytest
import redis
from batched_reads import read_concurrently

from bandits.posterior import Outcome, PosteriorConfig, PosteriorState, apply_outcome
from core.errors import DependencyUnavailable
from serving.exploration_slots import RedisPosteriorReader

pytestmark = pytest.mark.integration

CONFIG = PosteriorConfig()


@pytest.fixture
def reader():
    client = redis.Redis(host="127.0.0.1", port=6379)
    client.ping()  # a missing Redis is a failure, never a skip
    namespace = f"test_{uuid.uuid4().hex[:10]}"

    def redis_key(*parts: str) -> str:
        return ":".join((namespace, *parts))

    state = PosteriorState()
    outcomes = [("a", "mobile", True), ("a", "mobile", False), ("b", "desktop", True)]
    outcomes += [("c", "mobile", n % 3 == 0) for n in range(30)]  # enough for c's segment
    for n, (item, segment, success) in enumerate(outcomes):
        outcome = Outcome(f"r{n}|{item}", item, segment, 1_000 * n, success, "positive")
        state, writes = apply_outcome(state, outcome, CONFIG)
        for write in writes:
            client.hset(redis_key(*write.hash_parts), write.field, write.value)
    try:
        yield RedisPosteriorReader(client, redis_key, CONFIG)
    finally:
        keys = list(client.scan_iter(match=f"{namespace}:*"))
        if keys:
            client.delete(*keys)
        client.close()


READS = [
    (("a", "b", "unknown"), "global", 40_000),
    (("a", "c"), "mobile", 40_000),  # a segment: its own hash read too
    (("c",), "desktop", 90_000),  # a segment with no outcome of c
    (("b", "a"), "global", 10_000),
]


def test_a_batch_of_reads_answers_each_read_as_alone(reader: RedisPosteriorReader) -> None:
    alone = [reader.read(ids, segment, at) for ids, segment, at in READS]
    assert alone[0]["unknown"].alpha == CONFIG.prior_alpha  # nothing known: the prior
    assert alone[1]["c"] != alone[0]["a"] and set(alone[1]) == {"a", "c"}
    assert reader.read_batch(None, READS) == alone

    got, calls = read_concurrently(
        "posteriors", reader.read_batch, reader.batch_reads, reader.read, READS
    )
    assert got == alone
    assert max(calls) >= 2, calls  # reads did share a pipeline


def test_a_failed_batch_fails_every_read_in_it() -> None:
    client = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    reader = RedisPosteriorReader(client, lambda *parts: ":".join(parts), CONFIG)
    with pytest.raises(DependencyUnavailable):
        reader.read_batch(None, READS)
