"""Item-to-item transitions: pure update functions, two stores and the candidate source.

A user consuming ``item`` after ``previous`` (their recent items, oldest first) adds weight
``1 / distance`` to each transition ``p -> item`` for the last ``window`` items ``p`` of
``previous`` (``p != item``). Increments are plain sums, so applying any set of them in any order
gives the same counts (``merge_increments`` is commutative and associative; property-tested).
Duplicate events are removed upstream by ``event_id`` (stream de-duplication), not here.

Stores keep, per anchor item, its outgoing weights; the score of a neighbour ``j`` of ``h`` is the
transition probability ``w(h -> j) / total(h)``. ``RedisTransitionStore`` keeps only the top
``max_neighbours`` per anchor (trimming makes the tail order-dependent; the head is not affected
unless a neighbour sits near the cut).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from core.errors import DependencyUnavailable
from retrieval.catalog import ItemCatalog
from retrieval.sources import Candidate, RetrievalRequest, best_first

Increments = dict[tuple[str, str], float]


def transition_increments(previous: Sequence[str], item: str, window: int = 3) -> Increments:
    """What consuming ``item`` right after ``previous`` (oldest first) adds to the counts."""
    increments: Increments = {}
    for distance, anchor in enumerate(reversed(previous[-window:]), start=1):
        if anchor != item:
            key = (anchor, item)
            increments[key] = increments.get(key, 0.0) + 1.0 / distance
    return increments


def increments_from_sequence(sequence: Sequence[str], window: int = 3) -> Increments:
    """All increments of one user's sequence (oldest first), as if streamed event by event."""
    total: Increments = {}
    for position in range(1, len(sequence)):
        for key, weight in transition_increments(
            sequence[:position], sequence[position], window
        ).items():
            total[key] = total.get(key, 0.0) + weight
    return total


def merge_increments(*parts: Mapping[tuple[str, str], float]) -> Increments:
    """Sum of several increment maps (commutative, associative)."""
    merged: Increments = {}
    for part in parts:
        for key, weight in part.items():
            merged[key] = merged.get(key, 0.0) + weight
    return merged


def top_neighbours(weights: Mapping[str, float], total: float, n: int) -> list[tuple[str, float]]:
    """The ``n`` best neighbours as probabilities; ties broken by item id (deterministic)."""
    if total <= 0:
        return []
    return [(item, weight / total) for item, weight in best_first(weights.items())[:n]]


class TransitionStore(Protocol):
    def apply(self, increments: Mapping[tuple[str, str], float]) -> None: ...

    def neighbours(self, anchors: Sequence[str], n: int) -> dict[str, list[tuple[str, float]]]: ...


class InMemoryTransitionStore:
    """Dict-backed store (tests, benchmarks, single-process demo)."""

    def __init__(self) -> None:
        self._weights: dict[str, dict[str, float]] = defaultdict(dict)
        self._totals: dict[str, float] = defaultdict(float)

    def apply(self, increments: Mapping[tuple[str, str], float]) -> None:
        for (anchor, item), weight in increments.items():
            row = self._weights[anchor]
            row[item] = row.get(item, 0.0) + weight
            self._totals[anchor] += weight

    def neighbours(self, anchors: Sequence[str], n: int) -> dict[str, list[tuple[str, float]]]:
        return {
            a: top_neighbours(self._weights.get(a, {}), self._totals.get(a, 0.0), n)
            for a in anchors
        }


class RedisTransitionStore:
    """Redis-backed store: one sorted set per anchor plus one hash of totals, under ``prefix``.

    Keys: ``<prefix>:i2i:<anchor>`` (zset item -> weight), ``<prefix>:i2i_total`` (hash).
    Build the prefix with ``settings.redis_key("retrieval")`` so namespaces share nothing.
    """

    def __init__(self, client: Any, prefix: str, max_neighbours: int = 200) -> None:
        self.client = client
        self.prefix = prefix
        self.max_neighbours = max_neighbours

    def _key(self, anchor: str) -> str:
        return f"{self.prefix}:i2i:{anchor}"

    @property
    def totals_key(self) -> str:
        return f"{self.prefix}:i2i_total"

    def apply(self, increments: Mapping[tuple[str, str], float]) -> None:
        if not increments:
            return
        anchors: set[str] = set()
        try:
            pipe = self.client.pipeline(transaction=False)
            for (anchor, item), weight in increments.items():
                pipe.zincrby(self._key(anchor), weight, item)
                pipe.hincrbyfloat(self.totals_key, anchor, weight)
                anchors.add(anchor)
            for anchor in anchors:  # keep the head only: bounded memory per anchor
                pipe.zremrangebyrank(self._key(anchor), 0, -(self.max_neighbours + 1))
            pipe.execute()
        except Exception as exc:
            raise DependencyUnavailable("redis", f"transition update failed: {exc}") from exc

    def neighbours(self, anchors: Sequence[str], n: int) -> dict[str, list[tuple[str, float]]]:
        if not anchors:
            return {}
        try:
            pipe = self.client.pipeline(transaction=False)
            for anchor in anchors:
                # Raw reply (no ``withscores=`` option, so redis-py builds no pairs): parsed below.
                pipe.execute_command("ZREVRANGE", self._key(anchor), 0, n - 1, "WITHSCORES")
            pipe.hmget(self.totals_key, list(anchors))
            *ranked, totals = pipe.execute()
        except Exception as exc:
            raise DependencyUnavailable("redis", f"transition read failed: {exc}") from exc
        result: dict[str, list[tuple[str, float]]] = {}
        for anchor, rows, total in zip(anchors, ranked, totals, strict=True):
            denominator = float(total) if total else 0.0
            result[anchor] = _probabilities(rows, denominator) if denominator > 0 else []
        return result

    def owned_keys(self) -> Iterable[str]:
        """Every key this store owns (for cleanup in tests and `aether` maintenance)."""
        yield from (_text(k) for k in self.client.scan_iter(match=f"{self.prefix}:i2i*"))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _probabilities(reply: Sequence[Any], total: float) -> list[tuple[str, float]]:
    """``ZREVRANGE … WITHSCORES`` reply -> ``[(item, weight / total)]``, best first, ties by id.

    RESP2 gives ``[member, score, member, score, …]`` (bytes), RESP3 ``[[member, score], …]``.
    Ordered as ``top_neighbours`` orders (``best_first``); Redis itself breaks ties by descending
    member."""
    if reply and isinstance(reply[0], list | tuple):
        members, weights = [row[0] for row in reply], [row[1] for row in reply]
    else:
        members, weights = reply[0::2], reply[1::2]
    pairs = best_first((_text(m), float(w)) for m, w in zip(members, weights, strict=True))
    return [(item, weight / total) for item, weight in pairs]


class CooccurrenceSource:
    """Neighbours of the user's last ``anchors`` items, weighted by ``decay`` per step back."""

    def __init__(
        self,
        store: TransitionStore,
        anchors: int = 5,
        decay: float = 0.7,
        per_anchor: int = 200,
        name: str = "cooccurrence",
        catalog: ItemCatalog | None = None,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.anchors = anchors
        self.decay = decay
        self.per_anchor = per_anchor
        self.name = name

    def candidates(self, request: RetrievalRequest) -> list[Candidate]:
        recent = list(dict.fromkeys(reversed(request.history)))[: self.anchors]  # newest first
        if not recent:
            return []
        per_anchor = max(self.per_anchor, request.k)
        found = self.store.neighbours(recent, per_anchor)
        scores: dict[str, float] = {}
        for step, anchor in enumerate(recent):
            weight = self.decay**step
            for item, probability in found.get(anchor, []):
                scores[item] = scores.get(item, 0.0) + weight * probability
        excluded = request.exclusions.all()
        catalog, filters = self.catalog, request.filters
        ranked = best_first(
            (i, s)
            for i, s in scores.items()
            if i not in excluded and (catalog is None or catalog.passes(i, filters))
        )
        return [Candidate(i, s, self.name) for i, s in ranked[: request.k]]
