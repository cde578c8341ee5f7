"""The simulated serving world of ``aether bench drift``: ML-1M ratings → slates, clicks, events.

Everything is drawn with numpy, vectorised, from one seed; the monitor then consumes it through
the same pure functions the worker uses (``monitoring.step``) on a **virtual event-time clock**
(no broker, no worker: request *i* happens at ``T0 + i · 50 ms`` plus jitter).

Per request: a rating drawn uniformly (with replacement) from ML-1M's real ratings gives the
user and the item they really watched; the slate has 10 slots, the watched item at a random
position, the other 9 drawn by a Zipf law over ML-1M's popularity ranking (exponent 1.0). The
watched slot is clicked when the real rating is ≥ 4 — thinned so the slot CTR is 5 % — and
dismissed when it is ≤ 2. Each slot has a candidate source (ann 40 %, popular 30 %, transition
20 %, explore 10 %). Arms: users split in two (``A``/``B``). The ranker's top score is a user
effect (the user's mean rating) plus noise, σ = 1. Events: a ``view`` and a ``rating`` per
request, plus ``click`` / ``dismiss`` when they happen. Cold flags come from the real order of
ML-1M: a user's first 5 ratings, an item's first 10. Drawing ratings i.i.d. makes the null
stream stationary (ML-1M's own 2000–2003 drift is not a false alarm we want to count).

Scenarios inject at a known request (``inject_at`` plus a random offset below 200 requests): ``ctr`` (arm B's clicks kept with
probability 0.7: 5 % → 3.5 %), ``dismiss`` (more requests dismiss, so the dismiss share of events
is ×1.6), ``exposure`` (Zipf exponent 1.0 → 1.2), ``score`` (+0.4 σ), ``source_mix`` (ann 40 % →
20 %, the others scaled up) and ``lag`` (the consumer pauses: the sampler's lag readings grow
by one second per second while event time is unaffected).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from monitoring import EventSeen, PipelineSample, ServedItem, SlateServed, SlotOutcome

T0_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z, the virtual clock's origin
REQUEST_SPACING_MS = 50
SLOTS = 10
SOURCES = ("ann", "popular", "transition", "explore")
SOURCE_SHARES = np.array([0.4, 0.3, 0.2, 0.1])
TARGET_CTR = 0.05
SCENARIOS = ("ctr", "dismiss", "exposure", "score", "source_mix", "lag")
DRIFTED_ARM = "B"
SAMPLE_EVERY_MS = 1_000


@dataclass(frozen=True)
class Catalogue:
    """What the simulation needs from ML-1M, as arrays."""

    user: np.ndarray  # per rating: user index
    item: np.ndarray  # per rating: item index
    rating: np.ndarray
    cold_user: np.ndarray  # per rating: among the user's first 5 ratings
    cold_item: np.ndarray  # per rating: among the item's first 10 ratings
    item_ids: list[str]
    by_popularity: np.ndarray  # item indices, most rated first
    cold_item_rank: np.ndarray  # per item index: fraction of its ratings that are its first 10
    user_effect: np.ndarray  # per user index: standardised mean rating

    @classmethod
    def from_ratings(cls, ratings: pd.DataFrame) -> Catalogue:
        _, user = np.unique(ratings["user_id"].to_numpy(), return_inverse=True)
        items, item = np.unique(ratings["item_id"].to_numpy(), return_inverse=True)
        order = np.argsort(ratings["timestamp_ms"].to_numpy(), kind="stable")
        rank_user = np.empty(len(order), dtype=np.int64)
        rank_item = np.empty(len(order), dtype=np.int64)
        rank_user[order] = pd.Series(user[order]).groupby(user[order]).cumcount().to_numpy()
        rank_item[order] = pd.Series(item[order]).groupby(item[order]).cumcount().to_numpy()
        counts = np.bincount(item, minlength=len(items))
        rating = ratings["rating"].to_numpy(dtype=np.float64)
        mean = np.bincount(user, weights=rating) / np.bincount(user)
        return cls(
            user=user,
            item=item,
            rating=rating,
            cold_user=rank_user < 5,
            cold_item=rank_item < 10,
            item_ids=[str(i) for i in items],
            by_popularity=np.lexsort((np.arange(len(items)), -counts)),
            cold_item_rank=np.minimum(10, counts) / np.maximum(counts, 1),
            user_effect=(mean - mean.mean()) / mean.std(),
        )


@dataclass(frozen=True)
class Stream:
    """One run's observations plus the arrays the delays are counted on."""

    events: list[EventSeen]
    slates: list[SlateServed]
    outcomes: list[SlotOutcome]
    samples: list[PipelineSample]
    request_ms: np.ndarray  # per request
    event_ms: np.ndarray  # per event
    slot_ms: np.ndarray  # per slot
    slot_arm_b: np.ndarray  # per slot: in the drifted arm
    inject_ms: int | None
    lag_samples_ms: np.ndarray
    lag_seconds: np.ndarray


def _zipf_draw(rng: np.random.Generator, n_items: int, exponent: float, size: int) -> np.ndarray:
    weights = 1.0 / np.arange(1, n_items + 1) ** exponent
    cdf = np.cumsum(weights / weights.sum())
    return np.minimum(np.searchsorted(cdf, rng.random(size)), n_items - 1)


def simulate(
    catalogue: Catalogue,
    requests: int,
    seed: int,
    scenario: str | None,
    inject_at: float = 0.6,
) -> Stream:
    """Draw one run; ``scenario=None`` is the null stream (no drift)."""
    # Every (seed, scenario) has its own random stream: the no-drift part of each scenario run is
    # fresh evidence about false alarms, not a copy of the null run.
    rng = np.random.default_rng([seed, (None, *SCENARIOS).index(scenario)])
    n = requests
    injected = np.zeros(n, dtype=bool)
    # A random offset of up to 200 requests, so the injection falls anywhere within an exposure
    # window or an event-time window, never on a boundary by construction.
    inject_index = int(n * inject_at) + int(rng.integers(0, 200)) if scenario else None
    if inject_index is not None:
        injected[inject_index:] = True
    request_ms = T0_MS + np.arange(n, dtype=np.int64) * REQUEST_SPACING_MS
    request_ms += rng.integers(0, REQUEST_SPACING_MS, n)
    rows = rng.integers(0, len(catalogue.rating), n)
    user, watched, rating = catalogue.user[rows], catalogue.item[rows], catalogue.rating[rows]
    arm_b = (user % 2).astype(bool)

    # Slates: the watched item at a random slot, 9 Zipf draws over the popularity ranking.
    n_items = len(catalogue.item_ids)
    exponent = np.where(injected & (scenario == "exposure"), 1.2, 1.0)
    ranks = np.where(
        exponent[:, None] > 1.0,
        _zipf_draw(rng, n_items, 1.2, n * SLOTS).reshape(n, SLOTS),
        _zipf_draw(rng, n_items, 1.0, n * SLOTS).reshape(n, SLOTS),
    )
    slot_item = catalogue.by_popularity[ranks]
    watched_slot = rng.integers(0, SLOTS, n)
    slot_item[np.arange(n), watched_slot] = watched
    # A shown item is cold with the probability that a random rating of it is among its first 10.
    slot_cold = rng.random((n, SLOTS)) < catalogue.cold_item_rank[slot_item]
    slot_cold[np.arange(n), watched_slot] = catalogue.cold_item[rows]
    shares = np.tile(SOURCE_SHARES, (n, 1))
    if scenario == "source_mix":
        drifted = np.array([0.2, *(SOURCE_SHARES[1:] * 0.8 / SOURCE_SHARES[1:].sum())])
        shares[injected] = drifted
    cdf = np.cumsum(shares, axis=1)
    slot_source = (rng.random((n, SLOTS, 1)) > cdf[:, None, :]).sum(axis=2)

    # Outcomes of the watched slot: clicks from real ratings (thinned to a 5 % slot CTR).
    keep = TARGET_CTR * SLOTS / float(np.mean(catalogue.rating >= 4))
    clicked = (rating >= 4) & (rng.random(n) < keep)
    if scenario == "ctr":
        clicked &= ~(injected & arm_b) | (rng.random(n) < 0.7)
    dismissed = rating <= 2
    if scenario == "dismiss":
        base_share = dismissed.mean() / (2 + clicked.mean() + dismissed.mean())
        share = 1.6 * base_share
        wanted = share * (2 + clicked.mean()) / (1 - share)  # dismisses per request after
        eligible = ~clicked & ~dismissed
        extra = (wanted - dismissed.mean()) / eligible.mean()
        dismissed = dismissed | (injected & eligible & (rng.random(n) < extra))
    score = 0.6 * catalogue.user_effect[user] + 0.8 * rng.standard_normal(n)
    if scenario == "score":
        score = score + 0.4 * injected

    # Events: view (+1 s), rating (+2 s), click / dismiss (+1.5 s) of the watched item.
    cold_u, cold_i = catalogue.cold_user[rows], catalogue.cold_item[rows]
    kinds = [("view", np.ones(n, bool), 1000), ("rating", np.ones(n, bool), 2000)]
    kinds += [("click", clicked, 1500), ("dismiss", dismissed, 1500)]
    events: list[EventSeen] = []
    event_times = []
    for name, mask, offset in kinds:
        idx = np.flatnonzero(mask)
        times = request_ms[idx] + offset
        event_times.append(times)
        events.extend(
            EventSeen(t, f"e{i}-{name}", name, u, c)
            for t, i, u, c in zip(
                times.tolist(),
                idx.tolist(),
                cold_u[idx].tolist(),
                cold_i[idx].tolist(),
                strict=True,
            )
        )

    item_ids = catalogue.item_ids
    slates: list[SlateServed] = []
    outcomes: list[SlotOutcome] = []
    arms = np.where(arm_b, "B", "A").tolist()
    slot_click = np.zeros((n, SLOTS), dtype=bool)
    slot_click[np.arange(n), watched_slot] = clicked
    slot_dismiss = np.zeros((n, SLOTS), dtype=bool)
    slot_dismiss[np.arange(n), watched_slot] = dismissed
    for i, (t, arm, items, sources, colds, clicks, dismisses, top) in enumerate(
        zip(
            request_ms.tolist(),
            arms,
            slot_item.tolist(),
            slot_source.tolist(),
            slot_cold.tolist(),
            slot_click.tolist(),
            slot_dismiss.tolist(),
            score.tolist(),
            strict=True,
        )
    ):
        request_id = f"r{i}"
        served = tuple(
            ServedItem(item_ids[item], SOURCES[source], cold)
            for item, source, cold in zip(items, sources, colds, strict=True)
        )
        slates.append(SlateServed(t, request_id, arm, served, top))
        outcomes.extend(
            SlotOutcome(t, f"{request_id}|{p}", arm, SOURCES[source], click, dismiss)
            for p, (source, click, dismiss) in enumerate(
                zip(sources, clicks, dismisses, strict=True)
            )
        )

    samples_ms, lag = _lag_readings(rng, request_ms, injected if scenario == "lag" else None)
    # Freshness follows the lag (a paused consumer commits nothing); dead letters are rare.
    freshness = lag + np.abs(rng.normal(0.05, 0.02, len(lag)))
    per_sample = len(events) / max(len(samples_ms), 1)
    dead = rng.poisson(per_sample * 0.001, len(lag))
    samples = [
        PipelineSample(t, j, s, f, d, round(per_sample))
        for j, (t, s, f, d) in enumerate(
            zip(samples_ms.tolist(), lag.tolist(), freshness.tolist(), dead.tolist(), strict=True)
        )
    ]
    return Stream(
        events=events,
        slates=slates,
        outcomes=outcomes,
        samples=samples,
        request_ms=request_ms,
        event_ms=np.sort(np.concatenate(event_times)),
        slot_ms=np.repeat(request_ms, SLOTS),
        slot_arm_b=np.repeat(arm_b, SLOTS),
        inject_ms=None if inject_index is None else int(request_ms[inject_index]),
        lag_samples_ms=samples_ms,
        lag_seconds=lag,
    )


def _lag_readings(
    rng: np.random.Generator, request_ms: np.ndarray, paused: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """One lag reading per second: batch cadence noise; a paused consumer falls behind 1 s/s."""
    at = np.arange(int(request_ms[0]), int(request_ms[-1]), SAMPLE_EVERY_MS, dtype=np.int64)
    lag = np.abs(rng.normal(0.3, 0.1, len(at))) + rng.uniform(0.0, 0.5, len(at))
    if paused is not None and paused.any():
        start = int(request_ms[np.argmax(paused)])
        lag += np.clip(at - start, 0, None) / 1000.0
    return at, lag
