"""Figures of ``aether bench live``: the three arms scored against what each user did next, the
offline temporal figure of the same model on the same requests, and where live loses to it.

A served slate is scored like an offline ranking: the target's 1-based position in the slate
(``k + 1`` if absent), so NDCG@k and HR@k are ``evaluation.metrics``' own. Confidence intervals
resample **users** (all of a user's requests together): a user's requests are not independent.
The gain of live over frozen is ``evaluation.metrics.relative_gain_ci`` with the users as groups.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmarks.live_replay import ARMS, ReplayLog, Served
from evaluation import metrics

K = 10


def slate_ranks(served: Sequence[Served], arm: str, k: int = K) -> np.ndarray:
    """The target's position in each request's slate of ``arm`` (``k + 1``: not in it)."""
    ranks = []
    for s in served:
        items = s.answers[arm].items[:k]
        target = s.request.item_id
        ranks.append(items.index(target) + 1 if target in items else k + 1)
    return np.asarray(ranks, dtype=np.int64)


def user_mean_ci(
    values: np.ndarray,
    users: Sequence[str],
    *,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval of the mean of ``values`` over bootstrap resamples of the users."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return float("nan"), float("nan")
    _, members = np.unique(np.asarray(users), return_inverse=True)
    sums = np.bincount(members, weights=values)
    counts = np.bincount(members).astype(np.float64)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, sums.size, size=(resamples, sums.size))
    means = sums[picks].sum(axis=1) / counts[picks].sum(axis=1)
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def beyond_accuracy(
    slates: Sequence[Sequence[str]],
    catalogue: Sequence[str],
    popularity: np.ndarray,
    n_users: int,
) -> dict[str, float]:
    """Coverage, exposure Gini and novelty of everything one arm served (catalogue items only)."""
    column = {item: c for c, item in enumerate(catalogue)}
    flat = np.asarray([column[i] for slate in slates for i in slate if i in column], dtype=np.int64)
    if flat.size == 0:
        return {"coverage": float("nan"), "gini": float("nan"), "novelty": float("nan")}
    return {
        "coverage": float(np.unique(flat).size / len(catalogue)),
        "gini": metrics.gini(np.bincount(flat, minlength=len(catalogue))),
        "novelty": metrics.novelty(flat, popularity, n_users),
    }


def arm_figures(
    log: ReplayLog,
    catalogue: Sequence[str],
    popularity: np.ndarray,
    n_users: int,
    *,
    seed: int = 0,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Per arm: NDCG@10 and HR@10 with user-resampled CIs, beyond-accuracy figures, latency and
    fallbacks; then live against frozen. Returns the flat figures and each arm's ranks."""
    served = [s for s in log.served if all(arm in s.answers for arm in ARMS)]
    users = [s.request.user_id for s in served]
    figures: dict[str, Any] = {
        "live_users": len(set(users)),
        "live_requests": len(served),
        "requests_with_a_failed_arm": len(log.served) - len(served),
    }
    ranks: dict[str, np.ndarray] = {}
    for arm in ARMS:
        ranks[arm] = slate_ranks(served, arm)
        gains = metrics.ndcg_gains(ranks[arm], K)
        hits = (ranks[arm] <= K).astype(np.float64)
        figures[f"{arm}_ndcg10"] = metrics.ndcg_at_k(ranks[arm], K)
        figures[f"{arm}_hr10"] = metrics.hit_rate_at_k(ranks[arm], K)
        low, high = user_mean_ci(gains, users, seed=seed)
        figures[f"{arm}_ndcg10_ci95_low"], figures[f"{arm}_ndcg10_ci95_high"] = low, high
        low, high = user_mean_ci(hits, users, seed=seed)
        figures[f"{arm}_hr10_ci95_low"], figures[f"{arm}_hr10_ci95_high"] = low, high
        slates = [s.answers[arm].items for s in served]
        for name, value in beyond_accuracy(slates, catalogue, popularity, n_users).items():
            figures[f"{arm}_{name}"] = value
        latencies = [s.answers[arm].latency_ms for s in served]
        if latencies:
            figures[f"{arm}_p50_ms"] = float(np.percentile(latencies, 50))
            figures[f"{arm}_p99_ms"] = float(np.percentile(latencies, 99))
        figures[f"{arm}_fallbacks"] = sum(s.answers[arm].fallback for s in served)
        figures[f"{arm}_short_slates"] = sum(len(s.answers[arm].items) < K for s in served)
    if served:
        gain, low, high = metrics.relative_gain_ci(
            ranks["live"], ranks["frozen"], K, groups=users, seed=seed
        )
    else:
        gain = low = high = float("nan")
    figures["live_gain_over_frozen"] = gain
    figures["live_gain_over_frozen_ci95_low"] = low
    figures["live_gain_over_frozen_ci95_high"] = high
    figures["live_minus_frozen_ndcg10"] = figures["live_ndcg10"] - figures["frozen_ndcg10"]
    # A user's first request after T finds the live row as frozen as the frozen one (no event of
    # theirs after T yet): the streaming can only show on their later requests.
    later = np.asarray(later_requests(served), dtype=bool)
    figures["live_requests_after_users_first"] = int(later.sum())
    if later.any():
        later_users = [u for u, keep in zip(users, later, strict=True) if keep]
        for arm in ARMS:
            figures[f"{arm}_ndcg10_later_requests"] = metrics.ndcg_at_k(ranks[arm][later], K)
        gain, low, high = metrics.relative_gain_ci(
            ranks["live"][later], ranks["frozen"][later], K, groups=later_users, seed=seed
        )
        figures["live_gain_over_frozen_later_requests"] = gain
        figures["live_gain_over_frozen_later_requests_ci95_low"] = low
        figures["live_gain_over_frozen_later_requests_ci95_high"] = high
    if (~later).any():
        first = ~later
        figures["live_ndcg10_first_requests"] = metrics.ndcg_at_k(ranks["live"][first], K)
        figures["frozen_ndcg10_first_requests"] = metrics.ndcg_at_k(ranks["frozen"][first], K)
    figures["live_and_frozen_same_slate_share"] = (
        float(np.mean([s.answers["live"].items == s.answers["frozen"].items for s in served]))
        if served
        else float("nan")
    )
    freshness = [s.freshness_ms for s in log.served if s.freshness_ms is not None]
    figures["live_freshness_samples"] = len(freshness)
    figures["live_freshness_timeouts"] = log.freshness_timeouts
    if freshness:
        figures["live_freshness_p50_ms"] = float(np.percentile(freshness, 50))
        figures["live_freshness_p99_ms"] = float(np.percentile(freshness, 99))
    figures["live_rows_current_share"] = (
        float(np.mean([s.live_row_current for s in served])) if served else float("nan")
    )
    figures["replay_ratings"], figures["replay_events"] = log.ratings, log.events
    figures["replay_seconds"] = log.seconds
    figures["replay_events_per_s"] = log.events / max(log.seconds, 1e-9)
    return figures, ranks


def later_requests(served: Sequence[Served]) -> list[bool]:
    """Per request: whether the same user had an earlier request in the replay."""
    seen: set[str] = set()
    flags = []
    for s in served:
        flags.append(s.request.user_id in seen)
        seen.add(s.request.user_id)
    return flags


def over_replay_time(
    served: Sequence[Served], ranks: dict[str, np.ndarray], bins: int = 8
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Each arm's NDCG@10 in ``bins`` event-time bins of equal request counts: (days after the
    first request at each bin's centre, NDCG@10 per bin)."""
    if not served:
        return np.zeros(0), {arm: np.zeros(0) for arm in ranks}
    times = np.asarray([s.request.event_time_ms for s in served], dtype=np.float64)
    order = np.argsort(times, kind="stable")
    chunks = [c for c in np.array_split(order, min(bins, len(order))) if c.size]
    days = np.asarray([(np.median(times[c]) - times.min()) / 86_400_000 for c in chunks])
    return days, {
        arm: np.asarray([metrics.ndcg_at_k(r[c], K) for c in chunks]) for arm, r in ranks.items()
    }
