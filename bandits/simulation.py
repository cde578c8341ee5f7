"""Replay MovieLens in event time to see what Thompson exploration buys over greedy.

Set-up (deliberately simple, so the comparison is about exploration and nothing else):

* **Catalogue**: items with at least ``min_item_ratings`` ratings in the file (a look-ahead used
  only to keep the catalogue to things someone watched); an item is *released* at its first
  rating and is a **new item** for ``new_item_days`` after that.
* **Requests**: ``n_requests`` rating events drawn uniformly (seeded) and replayed in event-time
  order; each is "user u visits at time t".
* **Candidates**: ``n_candidates`` items drawn uniformly from the items released before ``t``
  (a stand-in for retrieval). Every policy sees the same requests and the same candidates.
* **Reward model**: a shown item is a *click* if the user rates it ≥ ``positive_rating`` at any
  time after ``t`` (they went on to watch and like it). The outcome is fed back at once
  (feedback delay is not simulated).
* **Policies**, each with its own non-personalised Beta-Bernoulli posteriors per item
  (:mod:`bandits.posterior`, discounted with ``half_life_days`` of event time, read back through
  the same ``"S|F|at_ms"`` encoding serving uses; prior ``Beta(1, 19)``, mean 5 %, because a flat
  prior would make greedy optimistic and explore every unseen item first): ``greedy`` shows the top ``slate_size`` by
  posterior mean; ``thompson`` by a posterior draw; ``random`` shows random candidates.

Figures: long-run CTR (clicks / impressions; also over the second half only), catalogue coverage
(share of the catalogue shown at least once by the end; distinct items shown in the last 10 % of
requests; Gini of impressions over items) and new-item exposure (share of impressions given to
new items, next to their share among the candidates).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from bandits.posterior import (
    Outcome,
    PosteriorConfig,
    PosteriorState,
    apply_outcome,
    decode_counts_value,
)

DAY_MS = 86_400_000
POLICIES = ("greedy", "thompson", "random")


@dataclass(frozen=True)
class SimulationConfig:
    n_requests: int = 60_000
    n_candidates: int = 50
    slate_size: int = 5
    min_item_ratings: int = 10
    positive_rating: float = 4.0
    new_item_days: int = 30
    half_life_days: int = 365
    # Prior mean 5 % (≈ a typical click rate here). A flat Beta(1, 1) would make greedy
    # "optimistic": every unseen item would look like a 50 % item and be tried first.
    prior_alpha: float = 1.0
    prior_beta: float = 19.0
    seed: int = 0


@dataclass
class SimulationResult:
    config: SimulationConfig
    request_times: np.ndarray
    clicks: dict[str, np.ndarray]  # per request
    coverage: dict[str, np.ndarray]  # distinct catalogue items shown so far / catalogue size
    new_shown: dict[str, np.ndarray]  # new items shown per request
    new_in_candidates: np.ndarray  # share of new items among candidates, per request
    impressions: dict[str, np.ndarray]  # per catalogue item, at the end
    figures: dict[str, float | int] = field(default_factory=dict)


class _PolicyWorld:
    """One policy's posteriors; a float snapshot per item mirrors what serving reads."""

    def __init__(self, n_items: int, config: PosteriorConfig) -> None:
        self.config = config
        self.state = PosteriorState()
        self.s = np.zeros(n_items)
        self.f = np.zeros(n_items)
        self.at = np.zeros(n_items, dtype=np.int64)

    def posterior_params(self, items: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray]:
        half = self.config.half_life_ms
        scale = 1.0 if half is None else 2.0 ** (-np.maximum(t - self.at[items], 0) / half)
        alpha = self.config.prior_alpha + self.s[items] * scale
        return alpha, self.config.prior_beta + self.f[items] * scale

    def learn(self, request: int, item: int, t: int, success: bool) -> None:
        outcome = Outcome(f"q{request}|{item}", str(item), "*", t, success, "sim")
        self.state, writes = apply_outcome(self.state, outcome, self.config)
        self.state.seen.clear()  # ids never repeat here; keep memory flat
        self.s[item], self.f[item], self.at[item] = decode_counts_value(writes[0].value)


def simulate(
    ratings: pd.DataFrame, config: SimulationConfig = SimulationConfig()
) -> SimulationResult:
    """Run every policy on the same requests; ``ratings`` as from ``load_movielens``."""
    started = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    counts = ratings["item_id"].value_counts()
    catalogue = ratings[ratings["item_id"].isin(counts[counts >= config.min_item_ratings].index)]
    release = catalogue.groupby("item_id")["timestamp_ms"].min().sort_values(kind="stable")
    item_ids = release.index.to_numpy()
    release_ms = release.to_numpy(dtype=np.int64)
    index = {item: i for i, item in enumerate(item_ids)}
    liked = catalogue[catalogue["rating"] >= config.positive_rating]
    liked_at: dict[tuple[str, int], int] = {
        (u, index[i]): int(t)
        for u, i, t in zip(liked["user_id"], liked["item_id"], liked["timestamp_ms"], strict=True)
    }
    picks = np.sort(
        rng.choice(len(ratings), size=min(config.n_requests, len(ratings)), replace=False)
    )
    users = ratings["user_id"].to_numpy()[picks]
    times = ratings["timestamp_ms"].to_numpy(dtype=np.int64)[picks]

    posterior = PosteriorConfig(
        prior_alpha=config.prior_alpha,
        prior_beta=config.prior_beta,
        half_life_ms=config.half_life_days * DAY_MS,
    )
    worlds = {name: _PolicyWorld(len(item_ids), posterior) for name in POLICIES}
    policy_rngs = {
        name: np.random.default_rng(config.seed + 1 + k) for k, name in enumerate(POLICIES)
    }
    n = len(picks)
    clicks = {name: np.zeros(n) for name in POLICIES}
    new_shown = {name: np.zeros(n) for name in POLICIES}
    coverage = {name: np.zeros(n) for name in POLICIES}
    shown_ever = {name: np.zeros(len(item_ids), dtype=bool) for name in POLICIES}
    impressions = {name: np.zeros(len(item_ids)) for name in POLICIES}
    tail_start = n - max(1, n // 10)
    shown_tail = {name: np.zeros(len(item_ids), dtype=bool) for name in POLICIES}
    new_in_candidates = np.zeros(n)
    new_ms = config.new_item_days * DAY_MS

    for r in tqdm(range(n), desc="simulate", unit="req", mininterval=2.0):
        t, user = int(times[r]), users[r]
        released = int(np.searchsorted(release_ms, t, side="left"))  # items released before t
        if released == 0:
            continue
        cands = rng.choice(released, size=min(config.n_candidates, released), replace=False)
        is_new = release_ms[cands] >= t - new_ms
        new_in_candidates[r] = is_new.mean()
        k = min(config.slate_size, len(cands))
        for name, world in worlds.items():
            alpha, beta = world.posterior_params(cands, t)
            if name == "greedy":
                score = alpha / (alpha + beta)
            elif name == "thompson":
                score = policy_rngs[name].beta(alpha, beta)
            else:
                score = policy_rngs[name].random(len(cands))
            order = np.lexsort((np.arange(len(cands)), -score))[:k]
            for j in order:
                item = int(cands[j])
                hit = liked_at.get((user, item), -1) > t
                clicks[name][r] += hit
                new_shown[name][r] += is_new[j]
                shown_ever[name][item] = True
                impressions[name][item] += 1
                if r >= tail_start:
                    shown_tail[name][item] = True
                world.learn(r, item, t, bool(hit))
            coverage[name][r] = shown_ever[name].mean()
    for name in POLICIES:  # carry coverage over skipped (pool-empty) requests
        coverage[name] = np.maximum.accumulate(coverage[name])

    result = SimulationResult(
        config, times, clicks, coverage, new_shown, new_in_candidates, impressions
    )
    slots = n * config.slate_size
    figures: dict[str, float | int] = {
        "sim_requests": n,
        "sim_slate_size": config.slate_size,
        "sim_candidates_per_request": config.n_candidates,
        "sim_catalogue_items": len(item_ids),
        "sim_half_life_days": config.half_life_days,
        "sim_prior_alpha": config.prior_alpha,
        "sim_prior_beta": config.prior_beta,
        "sim_new_item_days": config.new_item_days,
        "sim_new_item_share_of_candidates": float(new_in_candidates.mean()),
    }
    for name in POLICIES:
        figures[f"sim_{name}_ctr"] = float(clicks[name].sum() / slots)
        figures[f"sim_{name}_ctr_last_half"] = float(
            clicks[name][n // 2 :].sum() / (slots - slots // 2)
        )
        figures[f"sim_{name}_catalogue_coverage"] = float(coverage[name][-1])
        figures[f"sim_{name}_new_item_share"] = float(new_shown[name].sum() / slots)
        # breadth in steady state: distinct items shown in the last 10 % of requests
        figures[f"sim_{name}_distinct_items_last_10pct"] = int(shown_tail[name].sum())
        figures[f"sim_{name}_impression_gini"] = gini(impressions[name])
    figures["sim_seconds"] = round(time.perf_counter() - started, 2)
    result.figures = figures
    return result


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of impressions over the catalogue (0 = even, → 1 = concentrated)."""
    x = np.sort(counts)
    if x.sum() == 0:
        return 0.0
    ranks = np.arange(1, len(x) + 1)
    return float((2 * (ranks * x).sum()) / (len(x) * x.sum()) - (len(x) + 1) / len(x))


def plot_simulation(result: SimulationResult, path: str | Path) -> Path:
    """Three panels: cumulative CTR by request, Lorenz curve of impressions, new-item share."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(result.request_times)
    requests = np.arange(1, n + 1)
    slots = result.config.slate_size * requests
    window = max(1, n // 50)
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for name in POLICIES:
        axes[0].plot(requests, np.cumsum(result.clicks[name]) / slots, label=name)
        shares = np.sort(result.impressions[name])
        lorenz = np.concatenate([[0.0], np.cumsum(shares) / max(shares.sum(), 1.0)])
        axes[1].plot(
            np.linspace(0, 1, len(lorenz)),
            lorenz,
            label=f"{name} (Gini {result.figures.get(f'sim_{name}_impression_gini', 0.0):.2f})",
        )
        share = pd.Series(result.new_shown[name] / result.config.slate_size).rolling(window).mean()
        axes[2].plot(requests, share, label=name)
    axes[1].plot([0, 1], [0, 1], "k:", linewidth=0.8)
    axes[2].plot(
        requests,
        pd.Series(result.new_in_candidates).rolling(window).mean(),
        "k:",
        label="among candidates",
    )
    axes[0].set(title="cumulative CTR (clicks / impressions)", xlabel="request (event-time order)")
    axes[1].set(
        title="impressions over the catalogue (Lorenz)",
        xlabel="share of catalogue items (fewest impressions first)",
        ylabel="share of impressions",
    )
    axes[2].set(
        title=f"new-item share of impressions (rolling {window} requests)",
        xlabel="request (event-time order)",
    )
    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(
        f"MovieLens replay: {n} requests, {result.config.n_candidates} random candidates, "
        f"slate {result.config.slate_size}, click = the user rates the item ≥ {result.config.positive_rating:g} later"
    )
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


__all__ = [
    "POLICIES",
    "SimulationConfig",
    "SimulationResult",
    "gini",
    "plot_simulation",
    "simulate",
]
