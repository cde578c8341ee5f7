"""Thompson-sampling exploration slots for serving, with per-slot propensities (pure, seeded).

Policy: draw ``theta_i ~ Beta(alpha_i, beta_i)`` for every eligible candidate (items without a
posterior use the prior, so new items get explored), rank by ``theta`` and give the exploration
slots ``0 .. budget-1`` to the top ``budget`` items in that order.

Propensity of item ``i`` in slot ``j`` = P(``theta_i`` is the ``j``-th largest)
``= ∫ f_i(x) · P(exactly j of the other thetas exceed x) dx``. No elementary closed form exists
for Beta arms, so two numerical methods are offered (``method=``):

* ``"exact"`` — deterministic quadrature of that integral: substitute ``u = F_i(x)``, take
  ``quad_nodes`` midpoints in ``u`` and get the "exactly j others exceed" term from a
  Poisson-binomial recursion over the other arms. Cost ``O(n · nodes)`` Beta CDFs per row
  (cached per pair of posteriors: serving asks for the same arms again and again), so
  it is the default (``"auto"``) for up to ``EXACT_MAX_CANDIDATES`` candidates;
  ``thompson_explore`` computes only the picked items' rows, which is what keeps it cheap on the
  request path; a test checks it against a large Monte Carlo run.
* ``"monte_carlo"`` — ``n_draws`` independent rankings (default 4,000; standard error
  ``≤ 0.5 / sqrt(n_draws)`` ≈ 0.008 absolute, much less for small propensities), from its own
  RNG stream (``seed + 1``) so it never depends on the selection draw. Used above the threshold;
  its cost grows with candidates × draws, so serving explores among a short list (or passes
  fewer draws) to stay inside its deadline.

A floor of ``0.5 / n_draws`` is put on any Monte Carlo propensity of a chosen item (it was drawn,
so its probability is not zero), which bounds IPS weights.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special

from bandits.posterior import BetaPosterior

DEFAULT_DRAWS = 4_000
EXACT_MAX_CANDIDATES = 8
FLAT_PRIOR = BetaPosterior(1.0, 1.0)  # frozen, safe as a default
QUAD_NODES = 1_024


@dataclass(frozen=True)
class ExplorationSlot:
    slot: int  # 0-based index among the exploration slots
    item_id: str
    sampled_value: float
    propensity: float  # P(policy puts item_id in this slot)


def _params(
    candidates: Sequence[str], posteriors: Mapping[str, BetaPosterior], prior: BetaPosterior
) -> tuple[np.ndarray, np.ndarray]:
    alpha = np.array([posteriors.get(c, prior).alpha for c in candidates], dtype=float)
    beta = np.array([posteriors.get(c, prior).beta for c in candidates], dtype=float)
    return alpha, beta


def slot_propensities(
    candidates: Sequence[str],
    posteriors: Mapping[str, BetaPosterior],
    budget: int,
    prior: BetaPosterior = FLAT_PRIOR,
    n_draws: int = DEFAULT_DRAWS,
    seed: int = 0,
    method: str = "auto",
    rows: Sequence[int] | None = None,
) -> np.ndarray:
    """Matrix ``P[i, j]`` = P(candidate ``i`` lands in exploration slot ``j``).

    Shape ``(len(candidates), min(budget, len(candidates)))``; every column sums to 1 (up to
    quadrature / Monte Carlo error). ``method``: ``"auto"``, ``"exact"`` or ``"monte_carlo"``.
    ``rows``: only these candidates' rows, in that order (the exact method then computes only
    those; Monte Carlo simulates every arm anyway).
    """
    if method == "auto":
        method = "exact" if len(candidates) <= EXACT_MAX_CANDIDATES else "monte_carlo"
    if method == "exact":
        return exact_slot_propensities(candidates, posteriors, budget, prior, rows=rows)
    if method == "monte_carlo":
        matrix = monte_carlo_slot_propensities(candidates, posteriors, budget, prior, n_draws, seed)
        return matrix if rows is None else matrix[np.asarray(rows, dtype=np.intp)]
    raise ValueError(f"method must be 'auto', 'exact' or 'monte_carlo', got {method!r}")


def exact_slot_propensities(
    candidates: Sequence[str],
    posteriors: Mapping[str, BetaPosterior],
    budget: int,
    prior: BetaPosterior = FLAT_PRIOR,
    quad_nodes: int = QUAD_NODES,
    rows: Sequence[int] | None = None,
) -> np.ndarray:
    """Quadrature of ``∫ f_i(x) P(exactly j others exceed x) dx`` (see the module docstring).

    ``rows``: only these candidates' rows, in that order (shape ``(len(rows), slots)``); each
    row is computed on its own, so it equals the same row of the full matrix exactly. Serving
    logs only the picked items' entries: 1 row instead of ``n`` is ``n`` times less work.
    """
    n = len(candidates)
    slots = min(budget, n)
    picked = np.arange(n) if rows is None else np.asarray(rows, dtype=np.intp)
    if n == 0 or slots <= 0:
        return np.zeros((len(picked), 0))
    alpha, beta = _params(candidates, posteriors, prior)
    # exceed[other, i, g] = P(theta_other > x[i, g]) at the picked arms' quantiles x: (n, r, nodes)
    exceed = np.empty((n, len(picked), quad_nodes))
    for o in range(n):
        for k, i in enumerate(picked):
            exceed[o, k] = _exceeding(alpha[o], beta[o], alpha[i], beta[i], quad_nodes)
    exceed[picked, np.arange(len(picked))] = 0.0  # an arm never competes with itself
    # ways[m, i, g] = P(exactly m of the arms folded so far, other than i, exceed x[i, g])
    ways = np.zeros((slots, len(picked), quad_nodes))
    ways[0] = 1.0
    for other in range(n):
        more = ways[:-1] * exceed[other]  # one more of them exceeds: m - 1 -> m
        ways *= 1.0 - exceed[other]
        ways[1:] += more
    return ways.mean(axis=2).T  # (r, slots)


# Serving asks for the same few arms' posteriors request after request (they change only when
# the bandit agent writes): their Beta quantiles and CDFs are cached, each array computed once
# per (posterior, nodes) and equal to the vectorised call's entries. 8 KiB per array.
@functools.lru_cache(maxsize=256)
def _quantiles(alpha: float, beta: float, nodes: int) -> np.ndarray:
    """The quadrature nodes of ``Beta(alpha, beta)``: its quantiles at ``u`` midpoints."""
    x = special.betaincinv(alpha, beta, (np.arange(nodes) + 0.5) / nodes)
    x.flags.writeable = False
    return x


@functools.lru_cache(maxsize=1024)
def _exceeding(
    alpha: float, beta: float, at_alpha: float, at_beta: float, nodes: int
) -> np.ndarray:
    """P(Beta(alpha, beta) exceeds each of ``Beta(at_alpha, at_beta)``'s quadrature nodes)."""
    exceed = 1.0 - special.betainc(alpha, beta, _quantiles(at_alpha, at_beta, nodes))
    exceed.flags.writeable = False
    return exceed


def monte_carlo_slot_propensities(
    candidates: Sequence[str],
    posteriors: Mapping[str, BetaPosterior],
    budget: int,
    prior: BetaPosterior = FLAT_PRIOR,
    n_draws: int = DEFAULT_DRAWS,
    seed: int = 0,
    batch: int = 1_000,
) -> np.ndarray:
    """Slot propensities from ``n_draws`` simulated Thompson rankings."""
    n = len(candidates)
    slots = min(budget, n)
    if n == 0 or slots <= 0:
        return np.zeros((n, 0))
    if n == 1:
        return np.ones((1, 1))
    alpha, beta = _params(candidates, posteriors, prior)
    rng = np.random.default_rng(seed)
    counts = np.zeros((n, slots))
    done = 0
    while done < n_draws:
        size = min(batch, n_draws - done)
        theta = rng.beta(alpha, beta, size=(size, n))
        # top ``slots`` per row, in descending order of theta
        top = np.argpartition(-theta, slots - 1, axis=1)[:, :slots]
        order = np.argsort(-np.take_along_axis(theta, top, axis=1), axis=1)
        ranked = np.take_along_axis(top, order, axis=1)
        for j in range(slots):
            counts[:, j] += np.bincount(ranked[:, j], minlength=n)
        done += size
    return counts / n_draws


def thompson_explore(
    candidates: Sequence[str],
    posteriors: Mapping[str, BetaPosterior],
    budget: int,
    seed: int,
    prior: BetaPosterior = FLAT_PRIOR,
    n_draws: int = DEFAULT_DRAWS,
    method: str = "auto",
) -> list[ExplorationSlot]:
    """Pick up to ``budget`` exploration items by Thompson sampling, with their propensities.

    ``seed`` should be derived from the request (e.g. a hash of ``request_id``) so a request
    replays identically. Duplicate candidate ids are ignored after their first occurrence.
    """
    unique = list(dict.fromkeys(candidates))
    slots = min(budget, len(unique))
    if slots <= 0:
        return []
    alpha, beta = _params(unique, posteriors, prior)
    theta = np.random.default_rng(seed).beta(alpha, beta)
    # ties (practically impossible with continuous draws) break by candidate order
    chosen = sorted(range(len(unique)), key=lambda i: (-theta[i], i))[:slots]
    # the chosen items' rows only: row j is the item placed in slot j
    propensity = slot_propensities(
        unique, posteriors, slots, prior, n_draws, seed + 1, method, rows=chosen
    )
    picked = [float(propensity[j, j]) for j in range(len(chosen))]
    floor = 0.5 / n_draws
    return [
        ExplorationSlot(
            slot=j,
            item_id=unique[i],
            sampled_value=float(theta[i]),
            propensity=max(p, floor),
        )
        for j, (i, p) in enumerate(zip(chosen, picked, strict=True))
    ]


def greedy_pick(
    candidates: Sequence[str],
    posteriors: Mapping[str, BetaPosterior],
    budget: int,
    prior: BetaPosterior = FLAT_PRIOR,
) -> list[str]:
    """Baseline without exploration: top ``budget`` by posterior mean (deterministic)."""
    unique = list(dict.fromkeys(candidates))
    means = [posteriors.get(c, prior).mean for c in unique]
    order = sorted(range(len(unique)), key=lambda i: (-means[i], i))
    return [unique[i] for i in order[:budget]]
