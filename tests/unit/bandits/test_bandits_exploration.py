"""Thompson exploration: computed slot propensities match how often slates actually come out."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from bandits.exploration import (
    exact_slot_propensities,
    greedy_pick,
    monte_carlo_slot_propensities,
    slot_propensities,
    thompson_explore,
)
from bandits.posterior import BetaPosterior

POSTERIORS = {
    "hot": BetaPosterior(30.0, 70.0),
    "warm": BetaPosterior(8.0, 40.0),
    "cold": BetaPosterior(2.0, 60.0),
    "mid": BetaPosterior(5.0, 20.0),
}
CANDIDATES = ["hot", "warm", "cold", "mid", "brand-new"]  # brand-new has no posterior: prior


def test_propensities_match_empirical_slot_frequencies():
    budget, n_slates = 3, 4_000
    computed = slot_propensities(CANDIDATES, POSTERIORS, budget)  # 5 candidates: quadrature
    observed = np.zeros_like(computed)
    index = {c: i for i, c in enumerate(CANDIDATES)}
    for request in range(n_slates):
        # only the selection matters here; a tiny Monte Carlo keeps the loop fast
        slate = thompson_explore(
            CANDIDATES, POSTERIORS, budget, seed=10_000 + request, n_draws=20, method="monte_carlo"
        )
        for slot in slate:
            observed[index[slot.item_id], slot.slot] += 1
    observed /= n_slates
    # binomial standard error of the empirical frequency (+1e-3 for quadrature error)
    se = np.sqrt(computed * (1 - computed) / n_slates)
    assert np.all(np.abs(observed - computed) <= 4 * se + 1e-3)
    np.testing.assert_allclose(computed.sum(axis=0), 1.0, atol=2e-3)


def test_quadrature_and_monte_carlo_agree():
    exact = exact_slot_propensities(CANDIDATES, POSTERIORS, 3)
    sampled = monte_carlo_slot_propensities(CANDIDATES, POSTERIORS, 3, n_draws=100_000, seed=3)
    se = np.sqrt(exact * (1 - exact) / 100_000)
    assert np.all(np.abs(exact - sampled) <= 4 * se + 1e-3)
    np.testing.assert_allclose(exact.sum(axis=0), 1.0, atol=2e-3)  # quadrature error
    assert np.all(exact.sum(axis=1) <= 1.0 + 2e-3)


def test_new_item_is_explored_with_the_prior():
    slots = slot_propensities(
        CANDIDATES, POSTERIORS, 1, n_draws=20_000, seed=1, method="monte_carlo"
    )
    # Beta(1, 1) beats every informed posterior whose mass sits below 0.4 most of the time
    assert slots[CANDIDATES.index("brand-new"), 0] > 0.5


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 6))
def test_selection_is_seeded_and_propensities_are_valid(seed, budget):
    method = "monte_carlo" if seed % 2 else "exact"
    first = thompson_explore(CANDIDATES, POSTERIORS, budget, seed=seed, n_draws=200, method=method)
    again = thompson_explore(CANDIDATES, POSTERIORS, budget, seed=seed, n_draws=200, method=method)
    assert first == again
    assert len(first) == min(budget, len(CANDIDATES))
    assert len({s.item_id for s in first}) == len(first)
    assert all(0 < s.propensity <= 1 for s in first)
    assert [s.slot for s in first] == list(range(len(first)))


def test_single_candidate_is_certain_and_greedy_is_deterministic():
    (only,) = thompson_explore(["x"], {}, 3, seed=0)
    assert (only.item_id, only.propensity) == ("x", 1.0)
    assert greedy_pick(CANDIDATES, POSTERIORS, 2) == ["brand-new", "hot"]


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0.5, 60.0), st.floats(0.5, 400.0)), min_size=2, max_size=6),
    st.integers(1, 3),
)
def test_quadrature_matches_sampling_for_any_posteriors(params, budget):
    names = [f"i{k}" for k in range(len(params))]
    posteriors = {n: BetaPosterior(a, b) for n, (a, b) in zip(names, params, strict=True)}
    exact = exact_slot_propensities(names, posteriors, budget)
    sampled = monte_carlo_slot_propensities(names, posteriors, budget, n_draws=40_000, seed=1)
    se = np.sqrt(exact.clip(0, 1) * (1 - exact.clip(0, 1)) / 40_000)
    assert np.all(np.abs(exact - sampled) <= 4 * se + 3e-3)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0.5, 60.0), st.floats(0.5, 400.0)), min_size=1, max_size=8),
    st.integers(1, 4),
    st.integers(0, 2**31 - 1),
)
def test_picked_rows_equal_the_full_matrix_and_thompson_logs_them(params, budget, seed):
    """Serving computes only the picked items' rows; they are the full matrix's rows exactly."""
    names = [f"i{k}" for k in range(len(params))]
    posteriors = {n: BetaPosterior(a, b) for n, (a, b) in zip(names, params, strict=True)}
    full = exact_slot_propensities(names, posteriors, budget, quad_nodes=64)
    rows = list(range(len(names)))[::-1][:budget]
    np.testing.assert_array_equal(
        exact_slot_propensities(names, posteriors, budget, quad_nodes=64, rows=rows), full[rows]
    )
    full = exact_slot_propensities(names, posteriors, budget)
    picks = thompson_explore(names, posteriors, budget, seed=seed, method="exact")
    for pick in picks:
        expected = max(float(full[names.index(pick.item_id), pick.slot]), 0.5 / 4_000)
        assert pick.propensity == expected


def _vectorised_quadrature(names, posteriors, budget, quad_nodes):
    """The quadrature as one vectorised computation (no cache): the reference."""
    from scipy import special

    alpha = np.array([posteriors[n].alpha for n in names])
    beta = np.array([posteriors[n].beta for n in names])
    u = (np.arange(quad_nodes) + 0.5) / quad_nodes
    x = special.betaincinv(alpha[:, None], beta[:, None], u[None, :])
    exceed = 1.0 - special.betainc(alpha[:, None, None], beta[:, None, None], x[None])
    exceed[np.arange(len(names)), np.arange(len(names))] = 0.0
    ways = np.zeros((min(budget, len(names)), len(names), quad_nodes))
    ways[0] = 1.0
    for other in range(len(names)):
        shifted = np.concatenate([np.zeros((1, *ways.shape[1:])), ways[:-1]], axis=0)
        ways = ways * (1.0 - exceed[other]) + shifted * exceed[other]
    return ways.mean(axis=2).T


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0.5, 60.0), st.floats(0.5, 400.0)), min_size=1, max_size=8),
    st.integers(1, 4),
)
def test_cached_quadrature_equals_the_vectorised_one_exactly(params, budget):
    """The per-posterior caches change no bit, asked once or again (a cache hit)."""
    names = [f"i{k}" for k in range(len(params))]
    posteriors = {n: BetaPosterior(a, b) for n, (a, b) in zip(names, params, strict=True)}
    reference = _vectorised_quadrature(names, posteriors, budget, 128)
    for _ in range(2):
        got = exact_slot_propensities(names, posteriors, budget, quad_nodes=128)
        np.testing.assert_array_equal(got, reference)
