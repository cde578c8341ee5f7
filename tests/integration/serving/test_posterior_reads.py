"""Serving's posterior reads on real Redis: a batch of reads answers each read as it is answered
alone, directly and through serving's batcher (``RedisPosteriorReader.batch_reads``)."""

from __future__ import annotations

import threading
import uuid

import pytest
import redis

from bandits.posterior import Outcome, PosteriorConfig, PosteriorState, apply_outcome
from core.errors import DependencyUnavailable
from serving.batching import MicroBatcher
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

    calls: list[int] = []

    def read_batch(key, batch):
        calls.append(len(batch))
        return reader.read_batch(key, batch)

    batcher = MicroBatcher("posteriors", read_batch, window_s=2.0)
    reader.batch_reads(batcher.submit)
    on_the_way = batcher.expect()  # the first reader waits for the others, within the window
    got: dict[int, dict] = {}
    start = threading.Barrier(len(READS))

    def ask(n: int) -> None:
        ids, segment, at = READS[n]
        start.wait()
        got[n] = reader.read(ids, segment, at)

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(len(READS))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    on_the_way.done()
    reader.batch_reads(None)
    assert [got[n] for n in range(len(READS))] == alone
    assert max(calls) >= 2, calls  # reads did share a pipeline


def test_a_failed_batch_fails_every_read_in_it() -> None:
    client = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    reader = RedisPosteriorReader(client, lambda *parts: ":".join(parts), CONFIG)
    with pytest.raises(DependencyUnavailable):
        reader.read_batch(None, READS)
