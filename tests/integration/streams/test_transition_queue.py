"""``RedisTransitionStore.queue`` (one ``EVAL`` per batch, the worker's commit path) leaves the
same bytes in Redis as the separate ``ZINCRBY``/``HINCRBYFLOAT``/trim commands it replaced, over
random batches with retractions and trims, inside a ``MULTI`` on a single Redis and on a
three-master Redis Cluster."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import redis

from core.settings import RedisSettings
from features.redis_client import redis_client
from features.transition_store import RETRACTED, RedisTransitionStore, stream_slot

pytestmark = pytest.mark.integration


def _separate_commands(
    store: RedisTransitionStore, pipe: Any, increments: Mapping[tuple[str, str], float]
) -> None:
    """What ``queue`` sent before it became one script (kept here as the reference)."""
    anchors: set[str] = set()
    retracted: set[str] = set()
    for (anchor, item), weight in increments.items():
        if abs(weight) <= RETRACTED:
            continue
        pipe.zincrby(store._key(anchor), weight, item)
        pipe.hincrbyfloat(store.totals_key, anchor, weight)
        anchors.add(anchor)
        if weight < 0:
            retracted.add(anchor)
    for anchor in sorted(anchors):
        pipe.zremrangebyrank(store._key(anchor), 0, -(store.max_neighbours + 1))
    for anchor in sorted(retracted):
        pipe.zremrangebyscore(store._key(anchor), "-inf", RETRACTED)


def _batches(seed: int) -> list[dict[tuple[str, str], float]]:
    rng = random.Random(seed)
    items = [f"i{n}" for n in range(12)] + ["é", "with space", "{tag}"]
    batches = []
    for _ in range(25):
        batch: dict[tuple[str, str], float] = {}
        for _ in range(rng.randrange(0, 40)):
            pair = (rng.choice(items), rng.choice(items))
            weight = rng.choice((1.0, 0.5, 1 / 3, -1.0, -0.5, -1 / 3, 1e-13, 0.1 + 0.2))
            batch[pair] = batch.get(pair, 0.0) + weight
        batches.append(batch)
    return batches


def _contents(client: Any, store: RedisTransitionStore) -> dict[bytes, object]:
    """Every key but the stamps (random per write; the reference commands wrote none)."""
    found: dict[bytes, object] = {}
    for key in sorted(store.owned_keys()):
        raw = key.encode() if isinstance(key, str) else key
        if raw == store.stamps_key.encode():
            continue
        if client.type(raw) == b"zset":
            found[raw] = client.execute_command("ZRANGE", raw, 0, -1, "WITHSCORES")
        else:
            found[raw] = sorted(client.hgetall(raw).items())
    return found


@pytest.fixture(params=["redis", "cluster"])
def client(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param == "cluster":
        url = request.getfixturevalue("redis_cluster_url")
        cluster = redis_client(RedisSettings(url=url, cluster=True))
        yield cluster
        cluster.close()
        return
    single = redis.Redis.from_url(request.getfixturevalue("redis_url"))
    single.ping()  # a missing Redis is a failure, never a skip
    yield single
    single.close()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_script_leaves_the_bytes_the_separate_commands_left(client: Any, seed: int) -> None:
    stores = []
    for _ in range(2):  # one namespace each, in the stream slot as the worker's
        namespace = f"tq{uuid.uuid4().hex[:8]}"
        stores.append(RedisTransitionStore(client, f"{stream_slot(namespace)}:retrieval", 4))
    scripted, reference = stores
    touched: set[str] = set()
    try:
        for batch in _batches(seed):
            touched |= {anchor for (anchor, _), w in batch.items() if abs(w) > RETRACTED}
            for store, queue in ((scripted, scripted.queue), (reference, None)):
                pipe = client.pipeline(transaction=True)
                if queue is None:
                    _separate_commands(store, pipe, batch)
                else:
                    queue(pipe, batch)
                pipe.execute()
        mine, theirs = _contents(client, scripted), _contents(client, reference)
        rename = {k: k.replace(reference.prefix.encode(), scripted.prefix.encode()) for k in theirs}
        assert mine == {rename[k]: v for k, v in theirs.items()}
        assert len(mine) > 5  # the batches did write (anchors, totals)
        stamped = client.hgetall(scripted.stamps_key)  # every anchor written has a stamp
        assert {field.decode() for field in stamped} == touched
    finally:
        for store in stores:
            for key in list(store.owned_keys()):
                client.delete(key)
