"""Do the experiment statistics decide right? A/A, A/B and interleaving runs on real tastes.

    aether bench experiments --dataset ml-1m --json docs/benchmarks/experiments.json

The slates come from the real request pipeline, once per arm, for real users at real moments
(``benchmarks.experiments_world``). Each run then replays an experiment on that world:

* **users** are drawn with replacement from the real held-out users (a run's "user" is a new
  person with the tastes and request times of a real one), and assigned 50/50 at random, as the
  salted hash in ``serving.experiments`` does;
* **clicks** follow a position-based model: position ``p`` (0-based) is looked at with probability
  ``1 / log2(p + 2)``, and a looked-at item is clicked if the user rated it >= 4 at or after the
  request (held-out truth). That examination draw is the only simulated behaviour;
* **A/A** runs serve the model in both arms; **A/B** runs the model against popularity, whose true
  CTR difference is known from the world (every slate and its click probabilities are known):
  ``ab_effect_size`` is the relative CTR lift of the model over popularity in the population;
* **interleaving** runs serve every user the team-draft interleaving of the same two rankers.

Decisions use the read-out's own functions (``evaluation.experiment_stats``: the delta-method
z-test on per-user CTR, the sign test on team-draft wins) at alpha. ``users_per_run`` defaults to
the delta-method sample size for ``--target-power`` on the world's per-user moments; the runs
then measure the power that size really has. "Impressions to decide": each run is looked at
after every ``1/looks`` of its users, and the impressions served up to the first look that is
significant in the true direction are counted (median over runs; a run that never decides counts
as infinite). Peeking like this inflates false positives, so it is a fair *speed comparison*
between the two methods (same rule for both), not a stopping rule to use; the
``*_impressions_at_power80`` figures avoid it (the smallest look at which 80 % of runs decide).
One A/B and one interleaving run are also pushed through the whole read-out path (impressions and
click/dismiss events → attribution → ``read_out``) to check the fast path counts the same.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats
from threadpoolctl import threadpool_limits

from benchmarks.experiments_check import full_path_check
from benchmarks.experiments_world import (
    EXPERIMENT,
    MODELS,
    ArmSlates,
    ExperimentWorld,
    Served,
    WorldConfig,
    build_world,
    examination,
    serve,
)
from benchmarks.machine import machine_description
from benchmarks.output import print_figures, write_json
from evaluation.experiment_stats import compare_ratios, interleaving_preference

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunConfig:
    aa_runs: int = 200
    ab_runs: int = 200
    interleaving_runs: int = 200
    users_per_run: int | None = None  # None: sized for target_power
    target_power: float = 0.9
    alpha: float = 0.05
    looks: int = 200
    seed: int = 0


def _per_user(served: Served, slates: ArmSlates, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    clicks = np.bincount(served.owner, served.clicked.sum(axis=1), minlength=n_users)
    slots = np.bincount(served.owner, slates.shown[served.rows].sum(axis=1), minlength=n_users)
    return clicks, slots


def _looks(n: int, looks: int) -> np.ndarray:
    """Arrival counts at which the run is looked at (the last one is ``n``)."""
    return np.unique(np.ceil(np.linspace(n / looks, n, looks)).astype(int))


def _running_z(x: np.ndarray, y: np.ndarray, treated: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Delta-method z of treated − control CTR over the first ``at`` users (vectorised form of
    ``compare_ratios``, checked against it at the last look)."""
    parts = []
    for mask in (~treated, treated):
        m = mask.astype(np.float64)
        n = np.cumsum(m)[at - 1]
        sx, sy = np.cumsum(x * m)[at - 1], np.cumsum(y * m)[at - 1]
        sxx, syy, sxy = (np.cumsum(v * m)[at - 1] for v in (x * x, y * y, x * y))
        with np.errstate(invalid="ignore", divide="ignore"):
            mx, my = sx / n, sy / n
            vx, vy = (sxx - n * mx**2) / (n - 1), (syy - n * my**2) / (n - 1)
            cxy = (sxy - n * mx * my) / (n - 1)
            r = sx / sy
            parts.append((r, (vx - 2 * r * cxy + r**2 * vy) / (n * my**2)))
    (r_c, v_c), (r_t, v_t) = parts
    with np.errstate(invalid="ignore", divide="ignore"):
        return (r_t - r_c) / np.sqrt(v_t + v_c)


def _decide_at(significant: np.ndarray, impressions_at: np.ndarray) -> float:
    hits = np.flatnonzero(significant)
    return float(impressions_at[hits[0]]) if hits.size else math.inf


def ab_run(world: ExperimentWorld, arms: tuple[str, str], n: int, rc: RunConfig, rng, sign: int):
    """One A/B (or A/A) run: (significant at the end, impressions to decide, final p)."""
    k = world.arms[arms[0]].liked.shape[1]
    users = rng.integers(0, len(world.users), size=n)
    treated = rng.random(n) < 0.5
    x, y = np.zeros(n), np.zeros(n)
    for arm, mask in ((arms[0], ~treated), (arms[1], treated)):
        slates = world.arms[arm]
        served = serve(slates, users[mask], rng, k)
        x[mask], y[mask] = _per_user(served, slates, int(mask.sum()))
    final = compare_ratios((x[~treated], y[~treated]), (x[treated], y[treated]), 1 - rc.alpha)
    at = _looks(n, rc.looks)
    z = _running_z(x, y, treated, at)
    if math.isfinite(z[-1]) and not math.isclose(z[-1], final.z, rel_tol=1e-6, abs_tol=1e-9):
        raise AssertionError(f"running z {z[-1]} != read-out z {final.z}")
    slates_per_user = np.where(
        treated, world.arms[arms[1]].count[users], world.arms[arms[0]].count[users]
    )
    impressions_at = np.cumsum(slates_per_user)[at - 1]
    p = 2 * stats.norm.sf(np.abs(z))
    right = (p < rc.alpha) & (np.sign(z) == sign)
    return final.p_value < rc.alpha and np.sign(final.z) == sign, right, impressions_at, final


def interleaving_run(world: ExperimentWorld, n: int, rc: RunConfig, rng, sign: int):
    slates = world.arms["interleaved"]
    k = slates.liked.shape[1]
    served = serve(slates, rng.integers(0, len(world.users), size=n), rng, k)
    teams = slates.teams[served.rows]
    a = (served.clicked & (teams == 1)).sum(axis=1)
    b = (served.clicked & (teams == 2)).sum(axis=1)
    outcomes = np.where(a > b, "A", np.where(b > a, "B", np.where(a > 0, "tie", "")))
    final = interleaving_preference([o for o in outcomes if o])
    rows_at = np.searchsorted(served.owner, _looks(n, rc.looks), side="left")  # rows of users < at
    wins_a = np.concatenate([[0], np.cumsum(a > b)])[rows_at]
    wins_b = np.concatenate([[0], np.cumsum(b > a)])[rows_at]
    decisive = wins_a + wins_b
    low = stats.binom.cdf(np.minimum(wins_a, wins_b), np.maximum(decisive, 1), 0.5)
    p = np.where(decisive > 0, np.minimum(1.0, 2 * low), 1.0)
    direction = np.sign(wins_a - wins_b)
    right = (p < rc.alpha) & (direction == sign)
    decided = final.p_value < rc.alpha and np.sign(final.wins_a - final.wins_b) == sign
    return decided, right, rows_at.astype(float), final


def population_truth(world: ExperimentWorld, rng: np.random.Generator) -> dict[str, float]:
    """CTR of each arm for users drawn uniformly (exact), and the interleaving preference."""
    k = world.arms["model"].liked.shape[1]
    e = examination(k)
    truth: dict[str, float] = {}
    for arm in ("model", "popularity"):
        s = world.arms[arm]
        owner = np.repeat(np.arange(len(world.users)), s.count)
        clicks = np.bincount(owner, (s.liked * e).sum(axis=1), minlength=len(world.users))
        slots = np.bincount(owner, s.shown.sum(axis=1), minlength=len(world.users))
        truth[f"{arm}_ctr"] = float(clicks.mean() / slots.mean())
    big = serve(world.arms["interleaved"], np.repeat(np.arange(len(world.users)), 50), rng, k)
    teams = world.arms["interleaved"].teams[big.rows]
    a = (big.clicked & (teams == 1)).sum(axis=1)
    b = (big.clicked & (teams == 2)).sum(axis=1)
    truth["interleaving_preference"] = float(
        ((a > b).sum() - (b > a).sum()) / max(1, (a + b > 0).sum())
    )
    return truth


def sized_users(world: ExperimentWorld, alpha: float, power: float) -> int:
    """Users per run (both arms) for ``power`` by the delta-method sample-size formula."""
    k = world.arms["model"].liked.shape[1]
    e = examination(k)
    variance, means = 0.0, []
    for arm in ("popularity", "model"):
        s = world.arms[arm]
        owner = np.repeat(np.arange(len(world.users)), s.count)
        mu = np.bincount(owner, (s.liked * e).sum(axis=1), minlength=len(world.users))
        within = np.bincount(owner, (s.liked * e * (1 - e)).sum(axis=1), minlength=len(world.users))
        y = np.bincount(owner, s.shown.sum(axis=1), minlength=len(world.users)).astype(float)
        r = mu.mean() / y.mean()
        var_x = mu.var() + within.mean()
        cov = np.cov(mu, y, ddof=0)[0, 1]
        variance += (var_x - 2 * r * cov + r**2 * y.var()) / y.mean() ** 2
        means.append(r)
    delta = abs(means[1] - means[0])
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return int(2 * math.ceil(z**2 * variance / delta**2)) if delta > 0 else 10 * len(world.users)


def _p50(values: list[float]) -> float | None:
    median = float(np.median(values))
    return None if math.isinf(median) else median


def _at_power80(rights: list[np.ndarray], impressions: list[np.ndarray]) -> float | None:
    share = np.mean(np.vstack(rights), axis=0)
    hits = np.flatnonzero(share >= 0.8)
    return float(np.median(np.vstack(impressions)[:, hits[0]])) if hits.size else None


def run_benchmark(world: ExperimentWorld, rc: RunConfig) -> dict[str, Any]:
    rng = np.random.default_rng(rc.seed)
    truth = population_truth(world, rng)
    n = rc.users_per_run or sized_users(world, rc.alpha, rc.target_power)
    ab_sign = int(np.sign(truth["model_ctr"] - truth["popularity_ctr"]))
    il_sign = int(np.sign(truth["interleaving_preference"]))
    aa = [ab_run(world, ("model", "model"), n, rc, rng, 1) for _ in range(rc.aa_runs)]
    aa_false = [run[3].p_value < rc.alpha for run in aa]
    ab = [ab_run(world, ("popularity", "model"), n, rc, rng, ab_sign) for _ in range(rc.ab_runs)]
    il = [interleaving_run(world, n, rc, rng, il_sign) for _ in range(rc.interleaving_runs)]
    ab_decide = [_decide_at(right, at) for _, right, at, _ in ab]
    il_decide = [_decide_at(right, at) for _, right, at, _ in il]
    figures: dict[str, Any] = {
        **world.facts,
        "users_per_run": n,
        "users_per_run_sized_for_power": None if rc.users_per_run else rc.target_power,
        "alpha": rc.alpha,
        "looks_per_run": rc.looks,
        "aa_runs": rc.aa_runs,
        "aa_false_positive_rate": float(np.mean(aa_false)),
        "ab_runs": rc.ab_runs,
        "ab_power": float(np.mean([run[0] for run in ab])),
        "ab_effect_size": truth["model_ctr"] / truth["popularity_ctr"] - 1.0,
        "ab_true_ctr_model": truth["model_ctr"],
        "ab_true_ctr_popularity": truth["popularity_ctr"],
        "ab_impressions_per_run_mean": float(np.mean([run[2][-1] for run in ab])),
        "ab_impressions_to_decide_p50": _p50(ab_decide),
        "ab_impressions_at_power80": _at_power80([r[1] for r in ab], [r[2] for r in ab]),
        "interleaving_runs": rc.interleaving_runs,
        "interleaving_power": float(np.mean([run[0] for run in il])),
        "interleaving_true_preference": truth["interleaving_preference"],
        "interleaving_impressions_per_run_mean": float(np.mean([run[2][-1] for run in il])),
        "interleaving_impressions_to_decide_p50": _p50(il_decide),
        "interleaving_impressions_at_power80": _at_power80([r[1] for r in il], [r[2] for r in il]),
    }
    ab_p50, il_p50 = (
        figures["ab_impressions_to_decide_p50"],
        figures["interleaving_impressions_to_decide_p50"],
    )
    figures["interleaving_fewer_impressions_factor"] = (
        ab_p50 / il_p50 if ab_p50 and il_p50 else None
    )
    return figures


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="ml-1m", choices=("ml-latest-small", "ml-1m"))
    parser.add_argument("--data", type=Path, default=None, help="dataset folder")
    parser.add_argument("--model", choices=MODELS, default="ease")
    parser.add_argument("--checkpoint", type=Path, default=None, help="sasrec: temporal checkpoint")
    parser.add_argument("--train-minutes", type=float, default=5.0, help="sasrec: if trained here")
    parser.add_argument("--requests-per-user", type=int, default=4)
    parser.add_argument("--max-users", type=int, default=None, help="sample of held-out users")
    parser.add_argument("--runs", type=int, default=200, help="runs of each kind (A/A, A/B, IL)")
    parser.add_argument("--users-per-run", type=int, default=None, help="default: sized for power")
    parser.add_argument("--target-power", type=float, default=0.9)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--check-users", type=int, default=1500, help="full read-out path check")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)


def command(args: argparse.Namespace) -> int:
    # One core, as serving runs (``serving.build_pipeline``): BLAS and torch single-threaded.
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            figures = _measure(args)
    finally:
        torch.set_num_threads(torch_threads)
    print_figures(figures)
    write_json(args.json, figures)
    return 0


def _measure(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    world = build_world(
        WorldConfig(
            dataset=args.dataset,
            data=args.data,
            model=args.model,
            checkpoint=args.checkpoint,
            train_minutes=args.train_minutes,
            requests_per_user=args.requests_per_user,
            max_users=args.max_users,
            seed=args.seed,
        )
    )
    world_seconds = time.perf_counter() - started
    rc = RunConfig(
        aa_runs=args.runs,
        ab_runs=args.runs,
        interleaving_runs=args.runs,
        users_per_run=args.users_per_run,
        target_power=args.target_power,
        alpha=args.alpha,
        seed=args.seed,
    )
    figures = run_benchmark(world, rc)
    figures.update(full_path_check(world, args.check_users, rc.alpha, args.seed))
    figures["world_seconds"] = round(world_seconds, 1)
    figures["total_seconds"] = round(time.perf_counter() - started, 1)
    figures["experiment"] = EXPERIMENT
    figures["machine"] = machine_description()
    return figures
