"""Exposure statistics over a fixed number of served slots: popularity deciles, Gini, coverage.

Why deciles: Jensen–Shannon over raw per-item histograms of a 2k–10k-slot window has a
no-drift floor of 0.2–0.4 (most items are shown 0 or 1 times, so two windows of the same
distribution look different); over ~10 buckets of equal *reference* popularity mass the floor is
small and a shift of exposure towards the head or the tail shows clearly (docs/benchmarks/drift.md).

The reference is learned from the stream itself: the first ``reference_slots`` slots after the
monitor starts (or after an exposure detection, so that a new regime gets a new reference) count
each item's exposure; items are ranked by ``(-count, item_id)`` and cut into buckets by their
cumulative share of exposure. The head item alone can hold more than a tenth of all exposure, so
buckets are *about* equal; the JS compares against the reference's real bucket shares. At most
``max_reference_items`` items are remembered; items outside them (tail, or new since the
reference) fall in the last bucket.

The statistics are computed over a sliding window of ``block_slots`` slots that advances every
``hop_slots`` slots (Gini and coverage depend on the window size, so it is fixed, in slots, not
in time). Slots are taken in the monitor's canonical event-time order, so the windows are a
function of the event log only.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class PopularityReference:
    """Items' buckets and the reference share of exposure of each bucket."""

    bucket_of: Mapping[str, int]
    shares: tuple[float, ...]

    @classmethod
    def from_counts(
        cls, counts: Mapping[str, int], buckets: int = 10, max_items: int = 10_000
    ) -> PopularityReference:
        total = sum(counts.values())
        if total <= 0:
            raise ValueError("a popularity reference needs at least one exposure")
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        mass = [0.0] * buckets
        bucket_of: dict[str, int] = {}
        before = 0
        for rank, (item, count) in enumerate(ranked):
            bucket = min(int(before * buckets / total), buckets - 1)
            if rank >= max_items:
                bucket = buckets - 1
            else:
                bucket_of[item] = bucket
            mass[bucket] += count
            before += count
        return cls(bucket_of, tuple(m / total for m in mass))

    def to_dict(self) -> dict[str, Any]:
        return {"bucket_of": dict(self.bucket_of), "shares": list(self.shares)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PopularityReference:
        return cls(dict(data["bucket_of"]), tuple(float(s) for s in data["shares"]))


def js_distance(p: Sequence[float], q: Sequence[float]) -> float:
    """Jensen–Shannon distance (square root of the divergence, base 2; in [0, 1]).

    Both inputs are normalised first; a zero total gives 0.
    """
    sp, sq = sum(p), sum(q)
    if sp <= 0 or sq <= 0:
        return 0.0
    divergence = 0.0
    for a, b in zip(p, q, strict=True):
        a, b = a / sp, b / sq
        m = (a + b) / 2
        if a > 0:
            divergence += a * math.log2(a / m) / 2
        if b > 0:
            divergence += b * math.log2(b / m) / 2
    return math.sqrt(max(divergence, 0.0))


def gini(counts: Iterable[int], population: int | None = None) -> float:
    """Gini coefficient of exposure counts; ``population`` pads with never-shown items (zeros)."""
    values = sorted(counts)
    n = max(len(values), population or 0)
    total = sum(values)
    if n == 0 or total == 0:
        return 0.0
    zeros = n - len(values)
    weighted = sum((zeros + i + 1) * v for i, v in enumerate(values))
    return (2 * weighted) / (n * total) - (n + 1) / n


@dataclass
class ExposureWindow:
    """Learns the reference, then yields (js, gini, coverage) every ``hop_slots`` slots.

    ``chunks`` holds the last ``block_slots / hop_slots`` hops (item counts and bucket counts);
    the statistic of the window is over their union, ``block_slots`` slots in all.
    """

    block_slots: int
    hop_slots: int
    reference_slots: int
    buckets: int
    max_reference_items: int
    catalogue_size: int | None
    reference: PopularityReference | None = None
    learning: Counter[str] = field(default_factory=Counter)
    learned_slots: int = 0
    chunks: list[tuple[Counter[str], list[int]]] = field(default_factory=list)
    current: Counter[str] = field(default_factory=Counter)
    current_buckets: list[int] = field(default_factory=list)
    current_slots: int = 0

    def add(self, item_id: str) -> tuple[float, float, float] | None:
        """Count one served slot; the window's statistics when it completes a hop."""
        reference = self.reference
        if reference is None:
            self.learning[item_id] += 1
            self.learned_slots += 1
            if self.learned_slots >= self.reference_slots:
                self.reference = PopularityReference.from_counts(
                    self.learning, self.buckets, self.max_reference_items
                )
                self.learning = Counter()
                self.learned_slots = 0
            return None
        if not self.current_buckets:
            self.current_buckets = [0] * self.buckets
        self.current[item_id] += 1
        self.current_buckets[reference.bucket_of.get(item_id, self.buckets - 1)] += 1
        self.current_slots += 1
        if self.current_slots < self.hop_slots:
            return None
        self.chunks.append((self.current, self.current_buckets))
        self.current, self.current_buckets, self.current_slots = Counter(), [0] * self.buckets, 0
        hops = self.block_slots // self.hop_slots
        if len(self.chunks) > hops:
            del self.chunks[0]
        if len(self.chunks) < hops:
            return None
        items: Counter[str] = Counter()
        bucket_counts = [0] * self.buckets
        for chunk_items, chunk_buckets in self.chunks:
            items.update(chunk_items)
            for b, c in enumerate(chunk_buckets):
                bucket_counts[b] += c
        coverage = len(items) / (self.catalogue_size or self.block_slots)
        return (
            js_distance(bucket_counts, reference.shares),
            gini(items.values(), self.catalogue_size),
            coverage,
        )

    def relearn(self) -> None:
        """Start a new reference (after an exposure detection: the new regime is the norm)."""
        self.reference = None
        self.learning, self.learned_slots = Counter(), 0
        self.chunks, self.current, self.current_buckets, self.current_slots = [], Counter(), [], 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": None if self.reference is None else self.reference.to_dict(),
            "learning": dict(self.learning),
            "learned_slots": self.learned_slots,
            "chunks": [[dict(items), list(b)] for items, b in self.chunks],
            "current": dict(self.current),
            "current_buckets": list(self.current_buckets),
            "current_slots": self.current_slots,
        }

    def load(self, data: Mapping[str, Any]) -> None:
        ref = data["reference"]
        self.reference = None if ref is None else PopularityReference.from_dict(ref)
        self.learning = Counter(data["learning"])
        self.learned_slots = int(data["learned_slots"])
        self.chunks = [(Counter(items), list(b)) for items, b in data["chunks"]]
        self.current = Counter(data["current"])
        self.current_buckets = list(data["current_buckets"])
        self.current_slots = int(data["current_slots"])
