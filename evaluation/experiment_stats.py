"""The statistics of an online experiment read-out. Pure numpy/scipy, no I/O.

Users are the randomisation unit (``serving.experiments`` hashes the user id), so the slots one
user sees are not independent draws: a user who likes the catalogue clicks a lot in every slate.
Every interval and test here therefore treats the **user** as the unit:

* **Ratio metrics** (CTR = clicks / shown slots, dismiss rate = dismissals / shown slots) are
  ratios of two per-user sums, ``R = sum(x_u) / sum(y_u)``. Their variance comes from the
  **delta method** over users (Deng, Knoblich & Lu, KDD 2018, "Applying the Delta Method in Metric
  Analytics"): ``Var(R) ≈ (s_x² − 2 R s_xy + R² s_y²) / (n ȳ²)``. It is the standard for
  ratio metrics whose analysis unit (slot) is finer than the randomisation unit (user); it costs
  one pass, and it agrees with a user-level cluster bootstrap (a test checks that). A naive
  binomial interval over slots would be too narrow and an A/A test would "find" differences.
* **The primary test** between two arms is the delta-method **z-test** on the difference of the
  two arms' CTRs: arms hold disjoint users, so ``Var(R_t − R_c) = Var(R_t) + Var(R_c)``. It
  compares the quantity the product reports (clicks per shown slot, weighting slots equally),
  which a t-test on per-user CTRs would not (it weights users equally, however many slates each
  saw). With thousands of users the normal approximation is good; ``aether bench experiments``
  measures its A/A false-positive rate.
* **Exposure metrics** (catalogue coverage, Gini of exposure) are not smooth functions of means,
  so their intervals come from a **user-level cluster bootstrap** (users resampled with
  replacement, all of a user's slots together). Both depend on how many slots were served (a
  small arm shows fewer distinct items), so arms are compared on resamples of *equal* size:
  each draw takes as many users from both arms as the smaller arm has.
* **Sample-ratio mismatch**: Pearson's chi-square of users per arm against the configured weights.
  The threshold is p < 0.001, not 0.05, as in industry practice (Fabijan et al., KDD 2019): the
  check runs on every experiment and a false alarm throws an experiment away.
* **Team-draft interleaving**: each impression with a credited click is a win for A, for B, or a
  tie; the preference is tested with a two-sided **sign (binomial) test** on wins, ties left
  out. Impressions of one user are treated as independent here, the usual simplification in the
  interleaving literature (Chapelle et al., TOIS 2012).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse, stats


@dataclass(frozen=True)
class RatioEstimate:
    """``sum(numerators) / sum(denominators)`` over users, with its delta-method interval."""

    value: float
    se: float
    ci_low: float
    ci_high: float
    users: int


def _z(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return float(stats.norm.ppf(0.5 + level / 2.0))


def ratio_variance(numerators: np.ndarray, denominators: np.ndarray) -> tuple[float, float]:
    """``(R, Var(R))`` of the ratio of per-user sums, by the delta method.

    NaN for no users or no slots; variance 0 for a single user (nothing to estimate it from).
    """
    x = np.asarray(numerators, dtype=np.float64)
    y = np.asarray(denominators, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError("numerators and denominators must be 1-d arrays of the same length")
    n = len(x)
    if n == 0 or y.sum() <= 0:
        return float("nan"), float("nan")
    mean_x, mean_y = x.mean(), y.mean()
    ratio = mean_x / mean_y
    if n < 2:
        return float(ratio), 0.0
    cov = np.cov(x, y, ddof=1)
    variance = (cov[0, 0] - 2.0 * ratio * cov[0, 1] + ratio**2 * cov[1, 1]) / (n * mean_y**2)
    return float(ratio), float(max(variance, 0.0))


def ratio_estimate(
    numerators: np.ndarray, denominators: np.ndarray, level: float = 0.95
) -> RatioEstimate:
    ratio, variance = ratio_variance(numerators, denominators)
    se = math.sqrt(variance) if variance == variance else float("nan")
    half = _z(level) * se
    return RatioEstimate(ratio, se, ratio - half, ratio + half, len(numerators))


@dataclass(frozen=True)
class RatioComparison:
    """Treatment minus control of a ratio metric: the delta-method z-test."""

    control: float
    treatment: float
    difference: float  # treatment − control
    ci_low: float
    ci_high: float
    relative: float  # treatment / control − 1
    relative_ci_low: float
    relative_ci_high: float
    z: float
    p_value: float  # two-sided


def compare_ratios(
    control: tuple[np.ndarray, np.ndarray],
    treatment: tuple[np.ndarray, np.ndarray],
    level: float = 0.95,
) -> RatioComparison:
    """Delta-method z-test of ``R_treatment − R_control`` (each a ``(numerators,
    denominators)`` pair of per-user sums; the two arms' users are disjoint).

    The relative interval uses the delta method on ``R_t / R_c``:
    ``Var ≈ (R_t/R_c)² (Var_t/R_t² + Var_c/R_c²)``.
    """
    r_c, v_c = ratio_variance(*control)
    r_t, v_t = ratio_variance(*treatment)
    diff = r_t - r_c
    se = math.sqrt(v_c + v_t) if (v_c + v_t) == (v_c + v_t) else float("nan")
    z_crit = _z(level)
    if se > 0:
        z = diff / se
        p = float(2.0 * stats.norm.sf(abs(z)))
    else:  # no variance at all: identical constants are no evidence of a difference
        z = 0.0 if diff == 0 or diff != diff else math.copysign(math.inf, diff)
        p = 1.0 if z == 0.0 else 0.0
    if r_c > 0:
        relative = r_t / r_c - 1.0
        rel_se = (r_t / r_c) * math.sqrt(v_t / r_t**2 + v_c / r_c**2) if r_t > 0 else math.nan
    else:
        relative = rel_se = math.nan
    return RatioComparison(
        control=r_c,
        treatment=r_t,
        difference=diff,
        ci_low=diff - z_crit * se,
        ci_high=diff + z_crit * se,
        relative=relative,
        relative_ci_low=relative - z_crit * rel_se,
        relative_ci_high=relative + z_crit * rel_se,
        z=float(z),
        p_value=p,
    )


# -- exposure: coverage and Gini, cluster bootstrap over users --------------------------------


def exposure_matrix(user_items: Sequence[Mapping[int, int]], n_items: int) -> sparse.csr_matrix:
    """(users, items) slot counts from one ``{item column: slots}`` mapping per user."""
    rows, cols, vals = [], [], []
    for row, counts in enumerate(user_items):
        for col, count in counts.items():
            rows.append(row)
            cols.append(col)
            vals.append(count)
    return sparse.csr_matrix(
        (np.asarray(vals, dtype=np.float64), (rows, cols)), shape=(len(user_items), n_items)
    )


def _coverage_and_gini(exposure: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``exposure`` (draws × items): share of items shown, Gini of exposure."""
    exposure = np.atleast_2d(exposure)
    coverage = (exposure > 0).mean(axis=1)
    x = np.sort(exposure, axis=1)
    n = x.shape[1]
    totals = x.sum(axis=1)
    ranks = 2 * np.arange(1, n + 1) - n - 1
    with np.errstate(invalid="ignore", divide="ignore"):
        g = np.where(totals > 0, (x @ ranks) / (n * totals), 0.0)
    return coverage, np.clip(g, 0.0, 1.0)


@dataclass(frozen=True)
class BootstrapEstimate:
    value: float  # on the data as observed
    ci_low: float  # percentile interval of the resamples
    ci_high: float


def _draw_counts(rng: np.random.Generator, n_users: int, size: int, draws: int) -> np.ndarray:
    """(draws, n_users) how often each user is taken in each resample of ``size`` users."""
    return rng.multinomial(size, np.full(n_users, 1.0 / n_users), size=draws).astype(np.float64)


def _percentiles(sample: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(sample, [tail, 100.0 - tail])
    return float(low), float(high)


def exposure_estimates(
    matrix: sparse.csr_matrix, n_bootstrap: int = 500, level: float = 0.95, seed: int = 0
) -> dict[str, BootstrapEstimate]:
    """Coverage and Gini of one arm's exposure (``exposure_matrix``), users resampled."""
    n_users = matrix.shape[0]
    if n_users == 0:
        nan = BootstrapEstimate(math.nan, math.nan, math.nan)
        return {"coverage": nan, "gini": nan}
    observed = np.asarray(matrix.sum(axis=0)).ravel()
    coverage, gini_value = _coverage_and_gini(observed)
    weights = _draw_counts(np.random.default_rng(seed), n_users, n_users, n_bootstrap)
    cov_draws, gini_draws = _coverage_and_gini(np.asarray((matrix.T @ weights.T).T))
    return {
        "coverage": BootstrapEstimate(float(coverage[0]), *_percentiles(cov_draws, level)),
        "gini": BootstrapEstimate(float(gini_value[0]), *_percentiles(gini_draws, level)),
    }


@dataclass(frozen=True)
class ExposureComparison:
    """Treatment minus control of coverage and Gini, both arms resampled to the same users."""

    users_per_draw: int
    coverage: BootstrapEstimate  # value: mean difference over the draws
    gini: BootstrapEstimate


def compare_exposure(
    control: sparse.csr_matrix,
    treatment: sparse.csr_matrix,
    n_bootstrap: int = 500,
    level: float = 0.95,
    seed: int = 0,
) -> ExposureComparison:
    """Differences at equal size: each draw takes ``min(users)`` users from each arm."""
    size = min(control.shape[0], treatment.shape[0])
    if size == 0:
        nan = BootstrapEstimate(math.nan, math.nan, math.nan)
        return ExposureComparison(0, nan, nan)
    rng = np.random.default_rng(seed)
    sides = []
    for matrix in (control, treatment):
        weights = _draw_counts(rng, matrix.shape[0], size, n_bootstrap)
        sides.append(_coverage_and_gini(np.asarray((matrix.T @ weights.T).T)))
    cov_diff = sides[1][0] - sides[0][0]
    gini_diff = sides[1][1] - sides[0][1]
    return ExposureComparison(
        size,
        BootstrapEstimate(float(cov_diff.mean()), *_percentiles(cov_diff, level)),
        BootstrapEstimate(float(gini_diff.mean()), *_percentiles(gini_diff, level)),
    )


# -- sample-ratio mismatch --------------------------------------------------------------------

SRM_P_THRESHOLD = 0.001


@dataclass(frozen=True)
class SampleRatioCheck:
    chi2: float
    dof: int
    p_value: float
    flagged: bool
    expected_share: dict[str, float]
    observed_share: dict[str, float]


def sample_ratio_mismatch(
    users: Mapping[str, int],
    weights: Mapping[str, float],
    threshold: float = SRM_P_THRESHOLD,
) -> SampleRatioCheck:
    """Chi-square goodness of fit of users per arm against the configured weights.

    Arms with weight 0 are reachable only by override, so they take no part in the test — but a
    randomised user in one (a count the caller did not exclude as forced) is a mismatch by
    itself. Randomised users in arms the configuration does not know (renamed since?) are a
    mismatch too: either way the log does not follow the configured split.
    """
    live = {arm: w for arm, w in weights.items() if w > 0}
    total_weight = sum(live.values())
    observed = np.array([users.get(arm, 0) for arm in live], dtype=np.float64)
    n = observed.sum()
    expected_share = {arm: w / total_weight for arm, w in live.items()}
    observed_share = {arm: (users.get(arm, 0) / n if n else math.nan) for arm in live}
    stray = sum(count for arm, count in users.items() if arm not in live)
    if stray:
        return SampleRatioCheck(math.inf, len(live) - 1, 0.0, True, expected_share, observed_share)
    if len(live) < 2 or n == 0:
        return SampleRatioCheck(0.0, 0, 1.0, False, expected_share, observed_share)
    expected = n * np.array(list(expected_share.values()))
    chi2, p = stats.chisquare(observed, expected)
    return SampleRatioCheck(
        float(chi2), len(live) - 1, float(p), bool(p < threshold), expected_share, observed_share
    )


# -- team-draft interleaving --------------------------------------------------------------------


@dataclass(frozen=True)
class InterleavingPreference:
    impressions: int  # with at least one credited click
    wins_a: int
    wins_b: int
    ties: int
    preference: float  # (wins_a − wins_b) / impressions, in [-1, 1]; > 0 favours A
    p_value: float  # two-sided sign test, ties left out
    win_share_a: float  # wins_a / (wins_a + wins_b)
    win_share_ci_low: float  # Clopper–Pearson
    win_share_ci_high: float


def impression_winner(
    teams: Sequence[str | None], clicked_positions: Sequence[int] | frozenset[int]
) -> str | None:
    """``"A"``, ``"B"`` or ``"tie"`` for an impression with a credited click, else ``None``.

    A click credits the team that placed the clicked slot; slots no team placed (``None``: pins,
    exploration) credit nobody, so an impression whose only clicks are there says nothing about
    the two rankers and is left out, as are impressions without any click.
    """
    a = b = 0
    for position in set(clicked_positions):
        if 0 <= position < len(teams):
            team = teams[position]
            a += team == "A"
            b += team == "B"
    if a + b == 0:
        return None
    return "A" if a > b else "B" if b > a else "tie"


def interleaving_preference(outcomes: Sequence[str], level: float = 0.95) -> InterleavingPreference:
    """Aggregate per-impression winners (``impression_winner``) and test them."""
    wins_a = sum(1 for o in outcomes if o == "A")
    wins_b = sum(1 for o in outcomes if o == "B")
    ties = sum(1 for o in outcomes if o == "tie")
    total = wins_a + wins_b + ties
    decisive = wins_a + wins_b
    if decisive:
        test = stats.binomtest(wins_a, decisive, 0.5)
        interval = test.proportion_ci(level, method="exact")
        p, share, low, high = test.pvalue, wins_a / decisive, interval.low, interval.high
    else:
        p, share, low, high = 1.0, math.nan, math.nan, math.nan
    return InterleavingPreference(
        impressions=total,
        wins_a=wins_a,
        wins_b=wins_b,
        ties=ties,
        preference=(wins_a - wins_b) / total if total else 0.0,
        p_value=float(p),
        win_share_a=float(share),
        win_share_ci_low=float(low),
        win_share_ci_high=float(high),
    )
