"""Item-to-item transition counts: where the stream writes them and retrieval reads them.

The stream worker (``streams.transitions``: what one applied event adds) writes increments;
retrieval's ``CooccurrenceSource`` only reads neighbours (``TransitionReader``). This module owns
the stores and their Redis key layout, so both sides agree on it by construction.

Stores keep, per anchor item, its outgoing weights; the score of a neighbour ``j`` of ``h`` is the
transition probability ``w(h -> j) / total(h)``. Increments are plain sums, so applying any set of
them in any order gives the same counts. ``RedisTransitionStore`` keeps only the top
``max_neighbours`` per anchor (trimming makes the tail order-dependent; the head is not affected
unless a neighbour sits near the cut).

Redis keys (``transition_key_prefix``): ``<ns>:{<ns>}:retrieval:i2i:<anchor>`` (zset item ->
weight) and ``<ns>:{<ns>}:retrieval:i2i_total`` (hash anchor -> total weight); the ``{<ns>}``
hash tag puts them in the slot of the stream state they commit with (``stream_slot``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from operator import itemgetter
from typing import Any, Protocol

import numpy as np

from core.errors import DependencyUnavailable

DEFAULT_MAX_NEIGHBOURS = 200


class TransitionReader(Protocol):
    """What retrieval needs: the best neighbours of some anchors, as probabilities."""

    def neighbours(self, anchors: Sequence[str], n: int) -> dict[str, list[tuple[str, float]]]: ...

    def neighbour_arrays(self, anchors: Sequence[str], n: int) -> dict[str, NeighbourArrays]:
        """``neighbours`` unsorted, as ``(item ids, probabilities)``: the same ``n`` items per
        anchor and the same probabilities, ids as ``str`` or ``bytes`` (Redis answers bytes),
        anchors without neighbours left out. Serving's co-occurrence source reads this."""
        ...


class TransitionStore(TransitionReader, Protocol):
    def apply(self, increments: Mapping[tuple[str, str], float]) -> None: ...


# (item ids, probabilities) of one anchor's neighbours, in no set order.
NeighbourArrays = tuple[Sequence[Any], np.ndarray]


# A weight at or below this is a retracted transition (``streams.transitions``: an out-of-order
# event or a dismissal subtracts what it had added; float sums leave ~1e-16, not 0).
RETRACTED = 1e-9


# ``RedisTransitionStore.queue`` as one command. KEYS[1] the totals hash, KEYS[2..] one zset per
# anchor. ARGV: the trim rank, the retraction threshold, the number of increments, the number of
# anchors; the anchors (field names, in KEYS order from KEYS[2]); (key index, weight, item) per
# increment; the key index of every anchor, sorted by anchor (trimmed); those of the retracted
# anchors, sorted. The weights stay the strings the client sent, so Redis adds exactly what the
# separate commands added.
QUEUE_SCRIPT = """
local trim, retracted = ARGV[1], ARGV[2]
local increments, anchors = tonumber(ARGV[3]), tonumber(ARGV[4])
local i = 5 + anchors
for _ = 1, increments do
  local index = tonumber(ARGV[i])
  redis.call('ZINCRBY', KEYS[index], ARGV[i + 1], ARGV[i + 2])
  redis.call('HINCRBYFLOAT', KEYS[1], ARGV[index + 3], ARGV[i + 1])
  i = i + 3
end
for j = i, i + anchors - 1 do
  redis.call('ZREMRANGEBYRANK', KEYS[tonumber(ARGV[j])], 0, trim)
end
for j = i + anchors, #ARGV do
  redis.call('ZREMRANGEBYSCORE', KEYS[tonumber(ARGV[j])], '-inf', retracted)
end
return 0
"""


def stream_slot(namespace: str) -> str:
    """``<ns>:{<ns>}``: the prefix of every key the stream worker writes in one transaction.

    Redis Cluster runs a ``MULTI``/``EXEC`` only when all its keys hash to one slot; the slot of a
    key with a ``{tag}`` is the tag's. The worker's states, consumed offsets, watermarks and these
    transitions commit together, so they all carry the namespace as their tag (and still start
    with ``<ns>:``, which namespace cleanup matches). Layout: ``docs/architecture.md``.
    """
    return f"{namespace}:{{{namespace}}}"


def transition_key_prefix(namespace: str) -> str:
    """The prefix of a namespace's transition keys (``<ns>:{<ns>}:retrieval``)."""
    return f"{stream_slot(namespace)}:retrieval"


def by_weight_then_id(weighted: Iterable[tuple[str, float]]) -> list[tuple[str, float]]:
    """Highest weight first, ties by item id: the order every reader gets neighbours in.

    Two stable sorts with C-level keys give the order of ``key=lambda kv: (-kv[1], kv[0])`` for a
    fraction of its cost (it equals ``retrieval.sources.best_first``, the candidate order).
    """
    ranked = sorted(weighted, key=itemgetter(0))
    ranked.sort(key=itemgetter(1), reverse=True)
    return ranked


def top_neighbours(weights: Mapping[str, float], total: float, n: int) -> list[tuple[str, float]]:
    """The ``n`` best neighbours as probabilities; ties broken by item id (deterministic)."""
    if total <= 0:
        return []
    return [(item, weight / total) for item, weight in by_weight_then_id(weights.items())[:n]]


class InMemoryTransitionStore:
    """Dict-backed store (tests, the stream harness, benchmarks, single-process demo)."""

    def __init__(self) -> None:
        self._weights: dict[str, dict[str, float]] = defaultdict(dict)
        self._totals: dict[str, float] = defaultdict(float)

    def apply(self, increments: Mapping[tuple[str, str], float]) -> None:
        for (anchor, item), weight in increments.items():
            if abs(weight) <= RETRACTED:
                continue  # added and retracted within one batch: no member either way
            row = self._weights[anchor]
            row[item] = row.get(item, 0.0) + weight
            self._totals[anchor] += weight
            if row[item] <= RETRACTED:
                del row[item]

    def neighbours(self, anchors: Sequence[str], n: int) -> dict[str, list[tuple[str, float]]]:
        return {
            a: top_neighbours(self._weights.get(a, {}), self._totals.get(a, 0.0), n)
            for a in anchors
        }

    def neighbour_arrays(self, anchors: Sequence[str], n: int) -> dict[str, NeighbourArrays]:
        arrays: dict[str, NeighbourArrays] = {}
        for anchor, pairs in self.neighbours(anchors, n).items():
            if pairs:
                arrays[anchor] = ([i for i, _ in pairs], np.array([p for _, p in pairs]))
        return arrays

    def anchors(self) -> list[str]:
        return sorted(a for a, total in self._totals.items() if total > RETRACTED)


class RedisTransitionStore:
    """Redis-backed store: one sorted set per anchor plus one hash of totals, under ``prefix``.

    Build it with :func:`redis_transition_store` (the namespace's prefix), so writer and readers
    share the key layout.
    """

    def __init__(
        self, client: Any, prefix: str, max_neighbours: int = DEFAULT_MAX_NEIGHBOURS
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.max_neighbours = max_neighbours

    def _key(self, anchor: str) -> str:
        return f"{self.prefix}:i2i:{anchor}"

    @property
    def totals_key(self) -> str:
        return f"{self.prefix}:i2i_total"

    def queue(self, pipe: Any, increments: Mapping[tuple[str, str], float]) -> None:
        """Queue the commands that add ``increments`` into ``pipe`` (the caller executes it).

        The stream worker queues them into the ``MULTI`` that commits the user states whose
        seen-ids make a re-delivered event a duplicate (``streams.statestore``): exactly once.

        One ``EVAL`` of :data:`QUEUE_SCRIPT` runs, inside Redis, the commands this used to queue
        one by one (``ZINCRBY`` and ``HINCRBYFLOAT`` per pair, then the trims) with the same
        argument strings in the same order, so the stored counts are the same bytes; the client
        packs and parses one command per batch instead of two per pair
        (``docs/benchmarks/ingest.md``).
        """
        keys: dict[str, int] = {}  # anchor -> its index in KEYS (from 2; KEYS[1] the totals)
        triples: list[Any] = []
        retracted: set[str] = set()
        for (anchor, item), weight in increments.items():
            if abs(weight) <= RETRACTED:
                continue  # added and retracted within one batch: no member either way
            triples += (keys.setdefault(anchor, len(keys) + 2), weight, item)
            if weight < 0:
                retracted.add(anchor)
        if not keys:
            return
        anchors = list(keys)
        pipe.execute_command(  # not ``pipe.eval``: a cluster pipeline has none
            "EVAL",
            QUEUE_SCRIPT,
            len(anchors) + 1,
            self.totals_key,
            *(self._key(a) for a in anchors),
            -(self.max_neighbours + 1),
            RETRACTED,
            len(triples) // 3,
            len(anchors),
            *anchors,
            *triples,
            *(keys[a] for a in sorted(anchors)),  # keep the head only: bounded memory per anchor
            *(keys[a] for a in sorted(retracted)),  # a fully retracted one leaves no member
        )

    def apply(self, increments: Mapping[tuple[str, str], float]) -> None:
        if not increments:
            return
        try:
            pipe = self.client.pipeline(transaction=False)
            self.queue(pipe, increments)
            pipe.execute()
        except Exception as exc:
            raise DependencyUnavailable("redis", f"transition update failed: {exc}") from exc

    def _read(self, anchors: Sequence[str], n: int) -> list[tuple[str, Any, float]]:
        """``(anchor, raw ZREVRANGE reply, total)`` of each anchor: one round trip."""
        try:
            pipe = self.client.pipeline(transaction=False)
            for anchor in anchors:
                # Raw reply (no ``withscores=`` option, so redis-py builds no pairs): parsed below.
                pipe.execute_command("ZREVRANGE", self._key(anchor), 0, n - 1, "WITHSCORES")
            pipe.hmget(self.totals_key, list(anchors))
            *ranked, totals = pipe.execute()
        except Exception as exc:
            raise DependencyUnavailable("redis", f"transition read failed: {exc}") from exc
        return [
            (anchor, rows, float(total) if total else 0.0)
            for anchor, rows, total in zip(anchors, ranked, totals, strict=True)
        ]

    def neighbours(self, anchors: Sequence[str], n: int) -> dict[str, list[tuple[str, float]]]:
        if not anchors:
            return {}
        return {
            anchor: parse_neighbours(rows, total) if total > 0 else []
            for anchor, rows, total in self._read(anchors, n)
        }

    def neighbour_arrays(self, anchors: Sequence[str], n: int) -> dict[str, NeighbourArrays]:
        if not anchors:
            return {}
        arrays: dict[str, NeighbourArrays] = {}
        for anchor, rows, total in self._read(anchors, n):
            if total > 0 and rows:
                members, weights = _members_and_weights(rows)
                arrays[anchor] = (members, np.array(weights, dtype=np.float64) / total)
        return arrays

    def owned_keys(self) -> Iterable[str]:
        """Every key this store owns (for cleanup in tests and `aether` maintenance)."""
        yield from (_text(k) for k in self.client.scan_iter(match=f"{self.prefix}:i2i*"))


def redis_transition_store(
    client: Any, namespace: str, max_neighbours: int = DEFAULT_MAX_NEIGHBOURS
) -> RedisTransitionStore:
    """The namespace's transition store in Redis (the worker writes it, serving reads it)."""
    return RedisTransitionStore(client, transition_key_prefix(namespace), max_neighbours)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _members_and_weights(reply: Sequence[Any]) -> tuple[Sequence[Any], Sequence[Any]]:
    """RESP2 gives ``[member, score, member, score, …]`` (bytes), RESP3 ``[[member, score], …]``."""
    if reply and isinstance(reply[0], list | tuple):
        return [row[0] for row in reply], [row[1] for row in reply]
    return reply[0::2], reply[1::2]


def parse_neighbours(reply: Sequence[Any], total: float) -> list[tuple[str, float]]:
    """``ZREVRANGE … WITHSCORES`` reply -> ``[(item, weight / total)]``, best first, ties by id.

    RESP2 gives ``[member, score, member, score, …]`` (bytes), RESP3 ``[[member, score], …]``.
    Ordered as ``top_neighbours`` orders; Redis itself breaks ties by descending member."""
    members, weights = _members_and_weights(reply)
    pairs = by_weight_then_id((_text(m), float(w)) for m, w in zip(members, weights, strict=True))
    return [(item, weight / total) for item, weight in pairs]
