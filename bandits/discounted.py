"""Event-time exponentially discounted sums that are an exact function of the SET of contributions.

Why not a running ``x = x * decay + w``? Because that value depends on arrival order (each
update decays by "time since the last update") and on float rounding order, and our event-time
rules demand the same final state for any arrival order and on replay (docs/architecture.md).

The representation here:

* Every contribution made at event time ``t`` (ms) with weight ``w`` is worth
  ``w * 2 ** ((t - reference_ms) / half_life_ms)`` at ``reference_ms``.
* ``reference_ms`` is always a whole multiple of ``half_life_ms`` (``floor(max_t / h) * h``), so
  moving it forward by ``k`` half-lives rescales by exactly ``2 ** -k``: a float operation that
  is exact (``math.ldexp``), never a rounding step.
* Each contribution is computed from ``t`` alone as ``ldexp(2 ** (r / h), q)`` with
  ``t - reference = q*h + r`` (``0 <= r < h``), so it is bit-identical whatever the reference.
* The sum is kept as Shewchuk's list of non-overlapping float *partials*: the exact real sum of
  all contributions; ``value`` rounds it once, correctly (``math.fsum``). Hence the value is
  bit-identical for any order of additions. The list stays short (a handful of floats).

``half_life_ms=None`` turns discounting off (every weight counts 1).

Limit: contributions older than ~1000 half-lives behind the newest underflow to zero; they are
worth less than 2**-1000 of a fresh one, so nothing observable changes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


def _grow(partials: list[float], x: float) -> list[float]:
    """Add ``x`` to an exact expansion (Shewchuk / Python ``msum`` recipe), returning a new one."""
    out: list[float] = []
    for y in partials:
        if abs(x) < abs(y):
            x, y = y, x
        hi = x + y
        lo = y - (hi - x)
        if lo:
            out.append(lo)
        x = hi
    if x or not out:
        out.append(x)
    return out


def reference_for(event_ms: int, half_life_ms: int | None) -> int:
    """The reference time a state whose newest contribution is at ``event_ms`` uses."""
    if half_life_ms is None:
        return 0
    return (event_ms // half_life_ms) * half_life_ms


def weight_at(event_ms: int, reference_ms: int, half_life_ms: int | None) -> float:
    """Worth at ``reference_ms`` of a unit contribution made at ``event_ms`` (exactly reproducible)."""
    if half_life_ms is None:
        return 1.0
    whole, rest = divmod(event_ms - reference_ms, half_life_ms)
    return math.ldexp(2.0 ** (rest / half_life_ms), whole)


@dataclass(frozen=True)
class DiscountedSum:
    """Exact discounted sum referenced to ``reference_ms``; immutable, cheap to copy.

    >>> day = 86_400_000
    >>> s = DiscountedSum.empty().add(0, 1.0, day).add(day, 1.0, day)
    >>> s.value_at(day, day)     # the older one counts half
    1.5
    >>> DiscountedSum.empty().add(day, 1.0, day).add(0, 1.0, day) == s
    True
    """

    partials: tuple[float, ...] = ()
    reference_ms: int = 0
    newest_ms: int | None = None  # event time of the newest contribution (a set maximum)

    @classmethod
    def empty(cls) -> DiscountedSum:
        return cls()

    @property
    def is_empty(self) -> bool:
        return not any(self.partials)

    @property
    def value(self) -> float:
        """The discounted total at ``reference_ms``, correctly rounded."""
        return math.fsum(self.partials)

    def add(self, event_ms: int, weight: float, half_life_ms: int | None) -> DiscountedSum:
        reference = self.reference_ms
        partials = list(self.partials)
        newest = reference_for(event_ms, half_life_ms)
        if half_life_ms is not None and (newest > reference or self.is_empty):
            if not self.is_empty:
                shift = (newest - reference) // half_life_ms
                partials = [math.ldexp(p, -shift) for p in partials]
            reference = newest
        partials = _grow(partials, weight * weight_at(event_ms, reference, half_life_ms))
        newest = event_ms if self.newest_ms is None else max(self.newest_ms, event_ms)
        return DiscountedSum(_canonical(partials), reference, newest)

    def value_at(self, at_ms: int, half_life_ms: int | None) -> float:
        """Discounted total as seen at event time ``at_ms`` (decays further past the reference)."""
        if half_life_ms is None:
            return self.value
        return self.value * 2.0 ** (-(at_ms - self.reference_ms) / half_life_ms)

    def merge(self, other: DiscountedSum, half_life_ms: int | None) -> DiscountedSum:
        """Exact sum of two states (e.g. two partitions' partial sums)."""
        if other.is_empty:
            return self
        if self.is_empty:
            return other
        reference = max(self.reference_ms, other.reference_ms)
        partials: list[float] = []
        for part in (self, other):
            shift = 0 if half_life_ms is None else (reference - part.reference_ms) // half_life_ms
            for p in part.partials:
                partials = _grow(partials, math.ldexp(p, -shift))
        newest = max(n for n in (self.newest_ms, other.newest_ms) if n is not None)
        return DiscountedSum(_canonical(partials), reference, newest)

    def to_list(self) -> list[float | int]:
        """JSON-friendly form ``[reference_ms, newest_ms, *partials]`` (``[]`` when empty)."""
        if self.newest_ms is None:
            return []
        return [self.reference_ms, self.newest_ms, *self.partials]

    @classmethod
    def from_list(cls, data: Sequence[float | int]) -> DiscountedSum:
        if not data:
            return cls()
        return cls(tuple(float(p) for p in data[2:]), int(data[0]), int(data[1]))


def _canonical(partials: Iterable[float]) -> tuple[float, ...]:
    """A unique tuple for the exact value: re-expand the correctly rounded sum and its remainder.

    Two expansions of the same real number may differ in how the bits are split; rebuilding
    from ``fsum`` makes equal sums compare equal (state equality in tests and on replay).
    """
    rest = [p for p in partials if p]
    out: list[float] = []
    while rest:
        head = math.fsum(rest)
        if head == 0.0:
            break
        out.append(head)
        rest = _grow(rest, -head)
        rest = [p for p in rest if p]
    return tuple(out)
