"""Item-to-item transition counts: where the stream writes them and retrieval reads them.

The stream worker (``streams.transitions``: what one applied event adds) writes increments;
retrieval's ``CooccurrenceSource`` only reads neighbours (``TransitionReader``). This module owns
the stores and their Redis key layout, so both sides agree on it by construction.

Stores keep, per anchor item, its outgoing weights; the score of a neighbour ``j`` of ``h`` is the
transition probability ``w(h -> j) / total(h)``. Increments are plain sums, so applying any set of
them in any order gives the same counts. ``RedisTransitionStore`` keeps only the top
``max_neighbours`` per anchor (trimming makes the tail order-dependent; the head is not affected
unless a neighbour sits near the cut). That is the chosen trade (issue 21): memory bounded per
anchor, where exact counts would grow with the catalogue, over order-insensitivity past the cap.
Each anchor's total counts every increment, trimmed or not, so it stays exact; two runs of the
same events are compared at a capped anchor by its total (``stack.namespace_outputs``).

Redis keys (``transition_key_prefix``): ``<ns>:{<ns>}:retrieval:i2i:<anchor>`` (zset item ->
weight), ``<ns>:{<ns>}:retrieval:i2i_total`` (hash anchor -> total weight) and
``<ns>:{<ns>}:retrieval:i2i_stamp`` (hash anchor -> the stamp of the write that last changed its
neighbours); the ``{<ns>}`` hash tag puts them in the slot of the stream state they commit with
(``stream_slot``).

Stamps let a reader keep what it parsed (``TransitionReader.changed_neighbours``): every write
gives each anchor it touches a new stamp, unique with overwhelming probability (random 64 bits per
write, so a namespace deleted and rebuilt never repeats one), and a reader that names the stamp it
holds gets the neighbours again only if they changed. Serving's co-occurrence source keeps each
anchor's neighbours as catalogue rows under their stamp, so a request parses only the anchors
written since (``retrieval.cooccurrence``).
"""

from __future__ import annotations

import functools
import itertools
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from operator import itemgetter
from typing import Any, NamedTuple, Protocol

import numpy as np
from redis.commands.core import Script

from core.errors import DependencyUnavailable
from features.redis_client import registered_script

DEFAULT_MAX_NEIGHBOURS = 200
_NONE = np.zeros(0, dtype=np.float64)


# (item ids, probabilities) of one anchor's neighbours, in no set order.
NeighbourArrays = tuple[Sequence[Any], np.ndarray]


class StampedNeighbours(NamedTuple):
    """One anchor's answer to ``changed_neighbours``."""

    stamp: Any  # of the write that last changed the anchor; None: none recorded (never cache)
    arrays: NeighbourArrays | None  # None: unchanged since the stamp the reader named


# ``batch_reads``: (n, (anchors, held stamps)) -> that read's answers, from a batch of reads.
ReadSubmit = Callable[[int, tuple[tuple[str, ...], tuple[Any, ...]]], list["StampedNeighbours"]]


class TransitionReader(Protocol):
    """What retrieval needs: the best neighbours of some anchors, as probabilities."""

    def neighbours(self, anchors: Sequence[str], n: int) -> dict[str, list[tuple[str, float]]]: ...

    def changed_neighbours(
        self, anchors: Sequence[str], n: int, held: Sequence[Any]
    ) -> list[StampedNeighbours]:
        """Per anchor, its stamp and — unless ``held`` (one stamp or None per anchor) names that
        stamp — its neighbours as in ``neighbours``, unsorted, as ``(item ids, probabilities)``:
        the same ``n`` items and the same probabilities, ids as ``str`` or ``bytes`` (Redis
        answers bytes), empty for an anchor without neighbours. One atomic read, so a stamp
        always describes the neighbours it comes with. Serving's co-occurrence source reads
        this."""
        ...


class TransitionStore(TransitionReader, Protocol):
    def apply(self, increments: Mapping[tuple[str, str], float]) -> None: ...


# A weight at or below this is a retracted transition (``streams.transitions``: an out-of-order
# event or a dismissal subtracts what it had added; float sums leave ~1e-16, not 0).
RETRACTED = 1e-9


# ``RedisTransitionStore.queue`` as one command. KEYS[1] the totals hash, KEYS[2..] one zset per
# anchor, the last KEYS the stamps hash. ARGV: the trim rank, the retraction threshold, the number
# of increments, the number of anchors, this write's stamp; the anchors (field names, in KEYS order
# from KEYS[2]); (key index, weight, item) per increment; the key index of every anchor, sorted by
# anchor (trimmed); those of the retracted anchors, sorted. The weights stay the strings the
# client sent, so Redis adds exactly what the separate commands added.
QUEUE_SCRIPT = """
local trim, retracted = ARGV[1], ARGV[2]
local increments, anchors, stamp = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local i = 6 + anchors
for _ = 1, increments do
  local index = tonumber(ARGV[i])
  redis.call('ZINCRBY', KEYS[index], ARGV[i + 1], ARGV[i + 2])
  redis.call('HINCRBYFLOAT', KEYS[1], ARGV[index + 4], ARGV[i + 1])
  i = i + 3
end
for j = i, i + anchors - 1 do
  redis.call('ZREMRANGEBYRANK', KEYS[tonumber(ARGV[j])], 0, trim)
end
for j = i + anchors, #ARGV do
  redis.call('ZREMRANGEBYSCORE', KEYS[tonumber(ARGV[j])], '-inf', retracted)
end
for j = 6, 5 + anchors do
  redis.call('HSET', KEYS[#KEYS], ARGV[j], stamp)
end
return 0
"""

# ``RedisTransitionStore.changed_neighbours``. KEYS[1] the stamps hash, KEYS[2] the totals hash,
# KEYS[2 + a] anchor a's zset. ARGV[1] the last rank to read (n - 1), ARGV[1 + a] anchor a,
# ARGV[1 + m + a] the stamp the reader holds for it ('' for none). Per anchor: {stamp} when it is
# the one held, else {stamp or '', total or '0', ZREVRANGE ... WITHSCORES}.
READ_SCRIPT = """
local m = #KEYS - 2
local answers = {}
for a = 1, m do
  local anchor = ARGV[1 + a]
  local stamp = redis.call('HGET', KEYS[1], anchor)
  if stamp and stamp == ARGV[1 + m + a] then
    answers[a] = {stamp}
  else
    answers[a] = {
      stamp or '',
      redis.call('HGET', KEYS[2], anchor) or '0',
      redis.call('ZREVRANGE', KEYS[2 + a], 0, ARGV[1], 'WITHSCORES'),
    }
  end
end
return answers
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
        self._stamps: dict[str, int] = {}
        self._writes = itertools.count(1)

    def apply(self, increments: Mapping[tuple[str, str], float]) -> None:
        stamp = next(self._writes)
        for (anchor, item), weight in increments.items():
            if abs(weight) <= RETRACTED:
                continue  # added and retracted within one batch: no member either way
            self._stamps[anchor] = stamp
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

    def changed_neighbours(
        self, anchors: Sequence[str], n: int, held: Sequence[Any]
    ) -> list[StampedNeighbours]:
        answers = []
        for anchor, stamp in zip(anchors, held, strict=True):
            current = self._stamps.get(anchor)
            if current is not None and current == stamp:
                answers.append(StampedNeighbours(current, None))
                continue
            pairs = top_neighbours(self._weights.get(anchor, {}), self._totals.get(anchor, 0.0), n)
            arrays = ([i for i, _ in pairs], np.array([p for _, p in pairs], dtype=np.float64))
            answers.append(StampedNeighbours(current, arrays))
        return answers

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
        self._submit: ReadSubmit | None = None

    def _key(self, anchor: str) -> str:
        return f"{self.prefix}:i2i:{anchor}"

    @property
    def totals_key(self) -> str:
        return f"{self.prefix}:i2i_total"

    @property
    def stamps_key(self) -> str:
        return f"{self.prefix}:i2i_stamp"

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
            len(anchors) + 2,
            self.totals_key,
            *(self._key(a) for a in anchors),
            self.stamps_key,
            -(self.max_neighbours + 1),
            RETRACTED,
            len(triples) // 3,
            len(anchors),
            os.urandom(8).hex(),  # this write's stamp (module doc)
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

    def _read(self, anchors: Sequence[str], n: int, held: Sequence[Any]) -> list[Any]:
        """:data:`READ_SCRIPT`'s answer per anchor (one round trip, atomic): ``[stamp]`` when
        ``held`` names it, else ``[stamp or b"", total, raw ZREVRANGE … WITHSCORES reply]``."""
        try:
            return list(
                self._read_script(
                    keys=[self.stamps_key, self.totals_key, *(self._key(a) for a in anchors)],
                    args=[n - 1, *anchors, *(b"" if h is None else h for h in held)],
                )
            )
        except Exception as exc:
            raise DependencyUnavailable("redis", f"transition read failed: {exc}") from exc

    def neighbours(self, anchors: Sequence[str], n: int) -> dict[str, list[tuple[str, float]]]:
        if not anchors:
            return {}
        replies = self._read(anchors, n, [None] * len(anchors))  # no stamp held: all answered
        found = {}
        for anchor, (_, raw_total, rows) in zip(anchors, replies, strict=True):
            total = float(raw_total)
            found[anchor] = parse_neighbours(rows, total) if total > 0 else []
        return found

    def changed_neighbours(
        self, anchors: Sequence[str], n: int, held: Sequence[Any]
    ) -> list[StampedNeighbours]:
        if not anchors:
            return []
        if self._submit is not None:
            return self._submit(n, (tuple(anchors), tuple(held)))
        return _stamped(self._read(anchors, n, held))

    def batch_reads(self, submit: ReadSubmit | None) -> None:
        """Send each ``changed_neighbours`` read to ``submit(n, (anchors, held))`` (serving's
        ``serving.batching.MicroBatcher``), which answers the reads that meet there with one
        script call (``read_batch``); ``None``: each read alone."""
        self._submit = submit

    def read_batch(
        self, n: int, reads: Sequence[tuple[Sequence[str], Sequence[Any]]]
    ) -> list[list[StampedNeighbours]]:
        """``changed_neighbours(anchors, n, held)`` of each of ``reads`` from one script call
        (one round trip, atomic): their anchors one after the other; every key of the namespace
        shares one hash slot, so this holds on a Redis Cluster too."""
        replies = self._read(
            [a for anchors, _ in reads for a in anchors], n, [h for _, held in reads for h in held]
        )
        answers, start = [], 0
        for anchors, _ in reads:
            answers.append(_stamped(replies[start : start + len(anchors)]))
            start += len(anchors)
        return answers

    @functools.cached_property
    def _read_script(self) -> Script:
        return registered_script(self.client, READ_SCRIPT)

    def owned_keys(self) -> Iterable[str]:
        """Every key this store owns (for cleanup in tests and `aether` maintenance)."""
        yield from (_text(k) for k in self.client.scan_iter(match=f"{self.prefix}:i2i*"))


def _stamped(replies: Sequence[Any]) -> list[StampedNeighbours]:
    """:data:`READ_SCRIPT`'s replies as ``StampedNeighbours``, one per anchor."""
    answers = []
    for reply in replies:
        stamp = reply[0] or None  # b"": no stamp recorded
        if len(reply) == 1:
            answers.append(StampedNeighbours(stamp, None))
            continue
        total = float(reply[1])
        members, weights = _members_and_weights(reply[2]) if total > 0 else ((), ())
        arrays = (members, np.array(weights, dtype=np.float64) / total if members else _NONE)
        answers.append(StampedNeighbours(stamp, arrays))
    return answers


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
