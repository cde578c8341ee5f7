"""A small in-process time series store: the last rounds of scrapes, and what PromQL would say.

One :class:`Round` is one scrape of every target at one moment (a target that did not answer
holds ``None``). :class:`ScrapeRing` keeps the last ``capacity`` rounds, and answers the few
questions the page asks, with Prometheus's semantics so that the built-in page and the Grafana
dashboard agree:

* counters are compared *per target* and then summed (``sum(increase(...))``): a process that
  restarted resets its counters, and a drop is read as a reset (the increase is the new value),
  as Prometheus does;
* a series that appears between two rounds of a target that answered both counts from 0 (a
  labelled counter is born at its first increment);
* histogram quantiles interpolate linearly inside the bucket, like ``histogram_quantile``.

Pure: no I/O, no clock; the caller stamps each round.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from dashboard.scrape import Labels, Samples

Point = tuple[float, float]  # (epoch seconds, value)
LabelFilter = Mapping[str, str]


ByName = Mapping[str, Mapping[Labels, float]]  # sample name -> labels -> value


@dataclass(frozen=True, slots=True)
class Round:
    """One scrape of every target. ``samples``: target name -> its samples grouped by sample
    name (each question reads one name, so a page does not walk every sample of every round),
    ``None`` when the target did not answer."""

    at: float  # epoch seconds of the scrape
    samples: Mapping[str, ByName | None]

    @classmethod
    def of(cls, at: float, scrapes: Mapping[str, Samples | None]) -> Round:
        grouped: dict[str, ByName | None] = {}
        for target, samples in scrapes.items():
            if samples is None:
                grouped[target] = None
                continue
            by_name: dict[str, dict[Labels, float]] = {}
            for (name, labels), value in samples.items():
                by_name.setdefault(name, {})[labels] = value
            grouped[target] = by_name
        return cls(at, grouped)

    def series(self, target: str, name: str) -> Mapping[Labels, float] | None:
        """The series ``name`` of one target; ``None`` when the target did not answer."""
        by_name = self.samples.get(target)
        return None if by_name is None else by_name.get(name, {})


def _matches(labels: Labels, wanted: LabelFilter | None) -> bool:
    if not wanted:
        return True
    have = dict(labels)
    return all(have.get(k) == v for k, v in wanted.items())


def _label(labels: Labels, name: str) -> str:
    for key, value in labels:
        if key == name:
            return value
    return ""


class ScrapeRing:
    """The last ``capacity`` rounds, oldest first."""

    def __init__(self, capacity: int = 180) -> None:
        if capacity < 2:
            raise ValueError("a ring needs at least 2 rounds to compute a rate")
        self.capacity = capacity
        self._rounds: deque[Round] = deque(maxlen=capacity)

    def add(self, round_: Round) -> None:
        if self._rounds and round_.at <= self._rounds[-1].at:
            return  # out of order or repeated: a rate over dt <= 0 means nothing
        self._rounds.append(round_)

    @property
    def rounds(self) -> Sequence[Round]:
        return tuple(self._rounds)

    def __len__(self) -> int:
        return len(self._rounds)

    # -- instant values -----------------------------------------------------------------------

    def latest(self, name: str, wanted: LabelFilter | None = None) -> dict[Labels, float]:
        """The newest value of every series ``name`` over the targets that answered last time
        each answered (a target down now keeps no stale value: only the newest round counts)."""
        if not self._rounds:
            return {}
        out: dict[Labels, float] = {}
        newest = self._rounds[-1]
        for target in newest.samples:
            for labels, value in (newest.series(target, name) or {}).items():
                if _matches(labels, wanted):
                    out[labels] = out.get(labels, 0.0) + value
        return out

    def latest_by(
        self, name: str, label: str, wanted: LabelFilter | None = None
    ) -> dict[str, float]:
        """``sum by (label) (name)`` at the newest round."""
        out: dict[str, float] = {}
        for labels, value in self.latest(name, wanted).items():
            key = _label(labels, label)
            out[key] = out.get(key, 0.0) + value
        return out

    def gauge_history(
        self, name: str, label: str, wanted: LabelFilter | None = None
    ) -> dict[str, list[Point]]:
        """``sum by (label) (name)`` at every round, one line per label value."""
        lines: dict[str, list[Point]] = {}
        for round_ in self._rounds:
            at_round: dict[str, float] = {}
            for target in round_.samples:
                for labels, value in (round_.series(target, name) or {}).items():
                    if _matches(labels, wanted):
                        key = _label(labels, label)
                        at_round[key] = at_round.get(key, 0.0) + value
            for key, value in at_round.items():
                lines.setdefault(key, []).append((round_.at, value))
        return lines

    # -- counters -----------------------------------------------------------------------------

    def _increases(
        self, name: str, label: str, start: int, end: int, wanted: LabelFilter | None
    ) -> dict[str, tuple[dict[str, float], float]]:
        """Per target: ``sum by (label)`` of the increase over the rounds in ``[start, end]`` that
        target answered, and the seconds between its first and last answer there.

        Successive answers are compared one pair at a time, so a restart anywhere in the range is
        seen (the drop is read as a reset, as ``increase()`` does). A target needs two answers in
        the range; a round it missed (down, slow) is skipped, not read as zero.
        """
        n = len(self._rounds)
        first, last = (start + n if start < 0 else start), (end + n if end < 0 else end)
        if not (0 <= first < n and 0 <= last < n) or first >= last:
            return {}
        out: dict[str, tuple[dict[str, float], float]] = {}
        for target in self._rounds[last].samples:
            grown: dict[str, float] = {}
            before: Mapping[Labels, float] | None = None
            first_at = last_at = 0.0
            exported = False  # a target without the series at all has no data, not a zero rate
            for i in range(first, last + 1):
                round_ = self._rounds[i]
                now = round_.series(target, name)
                if now is None:
                    continue
                exported = exported or bool(now)
                if before is None:
                    before, first_at = now, round_.at
                    continue
                for labels, value in now.items():
                    if _matches(labels, wanted):
                        old = before.get(labels, 0.0)
                        key = _label(labels, label)
                        grown[key] = grown.get(key, 0.0) + (value - old if value >= old else value)
                before, last_at = now, round_.at
            if exported and last_at > first_at:
                out[target] = (grown, last_at - first_at)
        return out

    def increase_by(
        self,
        name: str,
        label: str,
        start: int,
        end: int,
        wanted: LabelFilter | None = None,
    ) -> dict[str, float] | None:
        """``sum by (label) (increase(name))`` between rounds ``start`` and ``end`` (indices into
        :attr:`rounds`, negative allowed), summed over targets; ``None`` when no target answered
        twice in that range."""
        per_target = self._increases(name, label, start, end, wanted)
        if not per_target:
            return None
        out: dict[str, float] = {}
        for grown, _seconds in per_target.values():
            for key, value in grown.items():
                out[key] = out.get(key, 0.0) + value
        return out

    def rate_history(
        self, name: str, label: str, wanted: LabelFilter | None = None
    ) -> dict[str, list[Point]]:
        """Per second, between each two successive rounds, one line per label value."""
        lines: dict[str, list[Point]] = {}
        for i in range(1, len(self._rounds)):
            dt = self._rounds[i].at - self._rounds[i - 1].at
            grown = self.increase_by(name, label, i - 1, i, wanted)
            if grown is None:
                continue
            for key, value in grown.items():
                lines.setdefault(key, []).append((self._rounds[i].at, value / dt))
        return lines

    def rate_now(self, name: str, window: int, wanted: LabelFilter | None = None) -> float | None:
        """Total per-second rate over the last ``window`` rounds (fewer while the ring fills)."""
        span = min(window, len(self._rounds) - 1)
        if span < 1:
            return None
        per_target = self._increases(name, "", -1 - span, -1, wanted)
        if not per_target:
            return None
        return sum(sum(grown.values()) / seconds for grown, seconds in per_target.values())

    def ratio_history(
        self, numerator: str, denominator: str, label: str, window: int
    ) -> dict[str, list[Point]]:
        """``sum by (label) (increase(num)) / sum by (label) (increase(den))`` over a sliding
        window of ``window`` rounds, at every round with a non-zero denominator."""
        lines: dict[str, list[Point]] = {}
        for i in range(1, len(self._rounds)):
            start = max(0, i - window)
            den = self.increase_by(denominator, label, start, i)
            num = self.increase_by(numerator, label, start, i) or {}
            if not den:
                continue
            for key, total in den.items():
                if total > 0:
                    lines.setdefault(key, []).append(
                        (self._rounds[i].at, num.get(key, 0.0) / total)
                    )
        return lines

    def increase_markers(
        self, name: str, label: str, wanted: LabelFilter | None = None
    ) -> list[tuple[float, str]]:
        """The rounds at which a counter grew, with the label value: alarm markers."""
        marks: list[tuple[float, str]] = []
        for i in range(1, len(self._rounds)):
            grown = self.increase_by(name, label, i - 1, i, wanted)
            for key, value in (grown or {}).items():
                if value > 0:
                    marks.append((self._rounds[i].at, key))
        return marks

    # -- histograms ---------------------------------------------------------------------------

    def bucket_increase(
        self, name: str, start: int, end: int, wanted: LabelFilter | None = None
    ) -> list[tuple[float, float]] | None:
        """Cumulative bucket counts ``[(le, count), …]`` of histogram ``name`` grown between two
        rounds, summed over targets and label sets; ``None`` without data."""
        grown = self.increase_by(f"{name}_bucket", "le", start, end, wanted)
        return _sorted_buckets(grown)

    def bucket_totals(
        self, name: str, index: int, wanted: LabelFilter | None = None
    ) -> list[tuple[float, float]] | None:
        """Cumulative bucket counts since each process started, at round ``index``."""
        try:
            round_ = self._rounds[index]
        except IndexError:
            return None
        totals: dict[str, float] = {}
        for target in round_.samples:
            for labels, value in (round_.series(target, f"{name}_bucket") or {}).items():
                if _matches(labels, wanted):
                    le = _label(labels, "le")
                    totals[le] = totals.get(le, 0.0) + value
        return _sorted_buckets(totals)

    def quantile_history(
        self, name: str, q: float, window: int, wanted: LabelFilter | None = None
    ) -> list[Point]:
        """``histogram_quantile(q, sum by (le) (increase(name_bucket[window])))`` per round."""
        points: list[Point] = []
        for i in range(1, len(self._rounds)):
            buckets = self.bucket_increase(name, max(0, i - window), i, wanted)
            value = histogram_quantile(q, buckets or [])
            if value is not None:
                points.append((self._rounds[i].at, value))
        return points


def _sorted_buckets(counts: Mapping[str, float] | None) -> list[tuple[float, float]] | None:
    if not counts:
        return None
    parsed: list[tuple[float, float]] = []
    for le, count in counts.items():
        try:
            parsed.append((float(le), count))
        except ValueError:
            continue  # not a bucket bound: ignore rather than fail the page
    return sorted(parsed) or None


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """Prometheus's ``histogram_quantile`` over cumulative ``(le, count)`` pairs.

    Linear interpolation inside the bucket that holds the rank; the lowest bucket starts at 0
    (or at its bound when that is negative); a rank in the ``+Inf`` bucket answers the highest
    finite bound. ``None`` when there are no observations.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be in [0, 1], got {q}")
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    previous_bound, previous_count = 0.0, 0.0
    for i, (bound, count) in enumerate(buckets):
        if count >= rank and count > previous_count:
            if math.isinf(bound):
                finite = [b for b, _ in buckets if not math.isinf(b)]
                return finite[-1] if finite else None
            lower = previous_bound if i > 0 else min(0.0, bound)
            if i == 0 and bound <= 0:
                return bound
            return lower + (bound - lower) * (rank - previous_count) / (count - previous_count)
        previous_bound, previous_count = bound, count
    return None


def densities(cumulative: Sequence[tuple[float, float]]) -> list[float]:
    """Non-cumulative shares per bucket (each bucket's count over the total), summing to 1."""
    total = cumulative[-1][1] if cumulative else 0.0
    if total <= 0:
        return [0.0] * len(cumulative)
    out: list[float] = []
    before = 0.0
    for _bound, count in cumulative:
        out.append(max(count - before, 0.0) / total)
        before = count
    return out


def shares(values: Mapping[str, float]) -> dict[str, float]:
    total = sum(v for v in values.values() if v > 0)
    return {k: (v / total if total > 0 else 0.0) for k, v in values.items()}


def last_values(lines: Mapping[str, Iterable[Point]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, points in lines.items():
        listed = list(points)
        if listed:
            out[key] = listed[-1][1]
    return out
