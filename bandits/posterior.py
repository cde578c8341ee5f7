"""Beta-Bernoulli posteriors per item and per item × segment, and their Redis layout (no I/O).

A posterior is ``Beta(prior_alpha + S, prior_beta + F)`` where ``S``/``F`` are event-time
discounted sums (:mod:`bandits.discounted`) of successes and failures. The stream step

    apply_outcome(state, outcome, config) -> (state, [PosteriorWrite, ...])

is a plain function (bytewax style) that a Faust agent calls per attributed outcome
(:mod:`bandits.attribution` produces them). It is idempotent on ``outcome.outcome_id`` and its
final state is a function of the *set* of outcomes only.

Why not ``river.proba.Beta``: it counts integer successes/failures with ``update(x)`` and has no
notion of event-time weights; discounting and exact order-insensitivity need the weighted sums
below. :meth:`BetaPosterior.to_river` hands the result to river where its API fits (``sample``,
``cdf``, ``mode``).

Redis layout (one hash per segment, one field per item, value ``"S|F|at_ms"``: the discounted
sums as seen at ``at_ms``, the event time of the item's newest outcome)::

    {namespace}:bandit:posterior:{segment}   field = item_id   value = "3.5|120.25|1732406400000"

Reading the global and the user's segment posteriors of many items is two ``HMGET`` in one
pipeline (one round trip): :func:`posterior_read_plan` builds them, :func:`decode_posteriors`
turns the replies into :class:`BetaPosterior` (missing items get the prior: new items explore).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bandits.discounted import DiscountedSum

if TYPE_CHECKING:
    from river import proba

GLOBAL_SEGMENT = "*"
DEFAULT_SEGMENT_KEYS: tuple[str, ...] = ("surface", "device")


@dataclass(frozen=True)
class PosteriorConfig:
    """Prior and discounting. ``half_life_ms=None`` means no forgetting."""

    prior_alpha: float = 1.0
    prior_beta: float = 1.0
    half_life_ms: int | None = 7 * 24 * 3600 * 1000
    segment_keys: tuple[str, ...] = DEFAULT_SEGMENT_KEYS

    def __post_init__(self) -> None:
        if self.prior_alpha <= 0 or self.prior_beta <= 0:
            raise ValueError("prior_alpha and prior_beta must be > 0")
        if self.half_life_ms is not None and self.half_life_ms <= 0:
            raise ValueError("half_life_ms must be > 0 or None")


def segment_of(context: Mapping[str, str], keys: Sequence[str] = DEFAULT_SEGMENT_KEYS) -> str:
    """Segment name from an event's context, e.g. ``surface=home,device=ios``; ``*`` if none."""
    parts = [f"{key}={context[key]}" for key in keys if context.get(key)]
    return ",".join(parts) if parts else GLOBAL_SEGMENT


@dataclass(frozen=True)
class BetaPosterior:
    alpha: float
    beta: float

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)

    def to_river(self, seed: int | None = None) -> proba.Beta:
        from river import proba

        return proba.Beta(self.alpha, self.beta, seed=seed)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ItemCounts:
    """Discounted successes and failures of one (segment, item)."""

    successes: DiscountedSum = field(default_factory=DiscountedSum)
    failures: DiscountedSum = field(default_factory=DiscountedSum)

    def add(
        self, event_ms: int, success: bool, weight: float, config: PosteriorConfig
    ) -> ItemCounts:
        if success:
            return ItemCounts(
                self.successes.add(event_ms, weight, config.half_life_ms), self.failures
            )
        return ItemCounts(self.successes, self.failures.add(event_ms, weight, config.half_life_ms))

    @property
    def newest_ms(self) -> int:
        """Event time of the newest outcome folded in (0 when empty)."""
        times = [t for t in (self.successes.newest_ms, self.failures.newest_ms) if t is not None]
        return max(times, default=0)

    def posterior(self, config: PosteriorConfig, at_ms: int | None = None) -> BetaPosterior:
        """Posterior as seen at event time ``at_ms`` (default: the newest outcome's time)."""
        at = self.newest_ms if at_ms is None else at_ms
        return BetaPosterior(
            config.prior_alpha + self.successes.value_at(at, config.half_life_ms),
            config.prior_beta + self.failures.value_at(at, config.half_life_ms),
        )

    def encode(self, config: PosteriorConfig) -> str:
        """Redis field value ``S|F|at_ms``: both sums as seen at the newest outcome's time."""
        at = self.newest_ms
        s = self.successes.value_at(at, config.half_life_ms)
        f = self.failures.value_at(at, config.half_life_ms)
        return f"{s!r}|{f!r}|{at}"


def decode_counts_value(raw: str | bytes) -> tuple[float, float, int]:
    text = raw.decode() if isinstance(raw, bytes) else raw
    s, f, at = text.split("|")
    return float(s), float(f), int(at)


@dataclass(frozen=True)
class Outcome:
    """One impression's reward, decided in event time (see :mod:`bandits.attribution`)."""

    outcome_id: str  # "{request_id}|{item_id}": the de-duplication key
    item_id: str
    segment: str
    impression_ms: int
    success: bool
    reason: str  # "positive" | "dismiss" | "no_reward"
    position: int = 0
    propensity: float | None = None
    # What served the slot, for monitoring (CTR and dismiss rate per arm and per source); the
    # posteriors ignore them.
    arm: str = ""
    source: str = ""
    # Where attribution decided it: its source partition, and the outcome's number in that
    # partition's sequence (``AttributionState.stamp``; -1: not numbered). Attribution commits
    # the numbers with its state before producing, and after a crash produces the same
    # outcomes again with the same numbers, so the posteriors skip them exactly (``marks``).
    origin: int = -1
    serial: int = -1


@dataclass(frozen=True)
class PosteriorWrite:
    """Effect for the adapter: set ``field`` of ``hash_parts`` to ``value`` (absolute, idempotent)."""

    hash_parts: tuple[str, ...]
    field: str
    value: str


@dataclass
class PosteriorState:
    """All posteriors of one aggregation partition plus what was applied already.

    ``marks``: per attribution partition (``Outcome.origin``), the highest ``Outcome.serial``
    applied. One partition's outcomes of one item arrive in serial order (one producer, keyed by
    item), and those produced again after a crash carry their first numbers, so a serial at or
    below the mark is a duplicate however long ago its id was forgotten. ``seen`` de-duplicates
    outcomes without a number by id; it is pruned by the caller with :func:`prune_seen` below a
    watermark.
    """

    counts: dict[tuple[str, str], ItemCounts] = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=dict)
    marks: dict[int, int] = field(default_factory=dict)

    def posterior(
        self, item_id: str, segment: str, config: PosteriorConfig, at_ms: int | None = None
    ) -> BetaPosterior:
        counts = self.counts.get((segment, item_id))
        if counts is None:
            return BetaPosterior(config.prior_alpha, config.prior_beta)
        return counts.posterior(config, at_ms)

    def to_dict(self) -> dict[str, Any]:
        return {
            "counts": [
                [seg, item, c.successes.to_list(), c.failures.to_list()]
                for (seg, item), c in sorted(self.counts.items())
            ],
            "seen": dict(sorted(self.seen.items())),
            "marks": {str(p): n for p, n in sorted(self.marks.items())},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PosteriorState:
        counts = {
            (seg, item): ItemCounts(DiscountedSum.from_list(s), DiscountedSum.from_list(f))
            for seg, item, s, f in data.get("counts", [])
        }
        return cls(
            counts=counts,
            seen={k: int(v) for k, v in data.get("seen", {}).items()},
            marks={int(p): int(n) for p, n in data.get("marks", {}).items()},
        )


def posterior_hash_parts(segment: str) -> tuple[str, ...]:
    """Key parts after the namespace; the adapter builds ``settings.redis_key(*parts)``."""
    return ("bandit", "posterior", segment)


def apply_outcome(
    state: PosteriorState, outcome: Outcome, config: PosteriorConfig, weight: float = 1.0
) -> tuple[PosteriorState, list[PosteriorWrite]]:
    """Fold one outcome into the global and the segment posterior; returns the Redis writes.

    Mutates and returns ``state`` (the caller owns it, as in bytewax's ``stateful_map``).
    """
    if outcome.origin >= 0:
        if outcome.serial <= state.marks.get(outcome.origin, -1):
            return state, []
        state.marks[outcome.origin] = outcome.serial
    if outcome.outcome_id in state.seen:
        return state, []
    state.seen[outcome.outcome_id] = outcome.impression_ms
    writes = []
    segments = {GLOBAL_SEGMENT, outcome.segment}
    for segment in sorted(segments):
        key = (segment, outcome.item_id)
        counts = state.counts.get(key, ItemCounts()).add(
            outcome.impression_ms, outcome.success, weight, config
        )
        state.counts[key] = counts
        writes.append(
            PosteriorWrite(posterior_hash_parts(segment), outcome.item_id, counts.encode(config))
        )
    return state, writes


def prune_seen(state: PosteriorState, watermark_ms: int) -> PosteriorState:
    """Forget de-duplication ids of outcomes whose impression is older than ``watermark_ms``."""
    state.seen = {k: t for k, t in state.seen.items() if t >= watermark_ms}
    return state


def posterior_read_plan(
    item_ids: Sequence[str], segment: str, redis_key: Callable[..., str]
) -> list[tuple[str, list[str]]]:
    """``[(hash_key, fields), ...]`` to ``HMGET`` in one pipeline: global first, then segment.

    ``redis_key`` is ``settings.redis_key`` (it adds the namespace).
    """
    fields = list(item_ids)
    plan = [(redis_key(*posterior_hash_parts(GLOBAL_SEGMENT)), fields)]
    if segment != GLOBAL_SEGMENT:
        plan.append((redis_key(*posterior_hash_parts(segment)), fields))
    return plan


def posterior_fields(
    item_ids: Iterable[str], segment: str = GLOBAL_SEGMENT
) -> tuple[tuple[str, ...], list[str]]:
    """Hash key parts and field names for ``item_ids`` in ``segment`` (one ``HMGET``)."""
    return posterior_hash_parts(segment), list(item_ids)


def decode_posteriors(
    item_ids: Sequence[str],
    global_values: Sequence[str | bytes | None],
    config: PosteriorConfig,
    at_ms: int,
    segment_values: Sequence[str | bytes | None] | None = None,
    min_segment_weight: float = 20.0,
) -> dict[str, BetaPosterior]:
    """Posteriors at event time ``at_ms`` from ``HMGET`` replies; absent items get the prior.

    The segment posterior is used where it has at least ``min_segment_weight`` discounted
    observations (else it is too thin to trust); otherwise the global one.
    """
    out: dict[str, BetaPosterior] = {}
    seg_vals = segment_values if segment_values is not None else [None] * len(item_ids)
    for item_id, g_raw, s_raw in zip(item_ids, global_values, seg_vals, strict=True):
        chosen = g_raw
        if s_raw is not None:
            s, f, _ = decode_counts_value(s_raw)
            if s + f >= min_segment_weight:
                chosen = s_raw
        if chosen is None:
            out[item_id] = BetaPosterior(config.prior_alpha, config.prior_beta)
            continue
        s, f, ref = decode_counts_value(chosen)
        # Never inflate: a serving clock behind the newest event reads the posterior as stored.
        elapsed = max(at_ms - ref, 0)
        scale = 1.0 if config.half_life_ms is None else 2.0 ** (-elapsed / config.half_life_ms)
        out[item_id] = BetaPosterior(config.prior_alpha + s * scale, config.prior_beta + f * scale)
    return out
