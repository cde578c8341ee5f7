"""``aether bench experiments``: its run machinery on a hand-made world, and a tiny real run
(ml-latest-small, the in-process pipeline) through the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from aether.cli import build_parser
from benchmarks.experiments import (
    RunConfig,
    ab_run,
    interleaving_run,
    population_truth,
    run_benchmark,
    sized_users,
)
from benchmarks.experiments_world import ArmSlates, ExperimentWorld, examination, serve

K = 4


def arm(liked_positions: list[list[int]], teams: list[int] | None = None) -> ArmSlates:
    """One slate per user; ``liked_positions[u]`` are the positions user ``u`` would click."""
    n = len(liked_positions)
    liked = np.zeros((n, K), dtype=bool)
    for u, positions in enumerate(liked_positions):
        liked[u, positions] = True
    team_rows = np.tile(np.array(teams or [0] * K, dtype=np.int8), (n, 1))
    return ArmSlates(
        liked=liked,
        disliked=np.zeros((n, K), dtype=bool),
        shown=np.ones((n, K), dtype=bool),
        teams=team_rows,
        start=np.arange(n),
        count=np.ones(n, dtype=np.int64),
        impressions=[],
    )


def world(users: int = 50) -> ExperimentWorld:
    # the model puts each user's liked item second, popularity fourth; interleaving: A at 0 and 2
    model = arm([[1]] * users)
    popularity = arm([[3]] * users)
    interleaved = arm([[0]] * users, teams=[1, 2, 1, 2])
    return ExperimentWorld(
        [f"u{i}" for i in range(users)],
        {"model": model, "popularity": popularity, "interleaved": interleaved},
        "test",
    )


def test_serving_a_run_gives_each_drawn_user_their_own_slates():
    slates = ArmSlates(
        liked=np.eye(3, K, dtype=bool),
        disliked=np.zeros((3, K), dtype=bool),
        shown=np.ones((3, K), dtype=bool),
        teams=np.zeros((3, K), dtype=np.int8),
        start=np.array([0, 2]),
        count=np.array([2, 1]),  # user 0 has rows 0 and 1, user 1 has row 2
        impressions=[],
    )
    served = serve(slates, np.array([1, 0, 1]), np.random.default_rng(0), K)
    assert served.rows.tolist() == [2, 0, 1, 2]
    assert served.owner.tolist() == [0, 1, 1, 2]
    assert not (served.clicked & ~slates.liked[served.rows]).any()


def test_the_population_truth_is_the_click_model_in_expectation():
    truth = population_truth(world(), np.random.default_rng(0))
    e = examination(K)
    assert truth["model_ctr"] == pytest.approx(e[1] / K)
    assert truth["popularity_ctr"] == pytest.approx(e[3] / K)
    assert truth["interleaving_preference"] == pytest.approx(1.0)  # only A's slot is liked


def test_a_real_effect_is_found_and_identical_arms_are_not():
    w, rc, rng = world(), RunConfig(looks=20), np.random.default_rng(1)
    decided, right, impressions_at, final = ab_run(w, ("popularity", "model"), 400, rc, rng, 1)
    assert decided and final.difference > 0 and right[-1]
    assert impressions_at[-1] == 400  # one slate per user
    same = [ab_run(w, ("model", "model"), 400, rc, rng, 1)[3].p_value for _ in range(60)]
    assert 0.0 < np.mean(np.array(same) < 0.05) < 0.2
    decided, right, _, final = interleaving_run(w, 100, rc, rng, 1)
    assert decided and final.wins_b == 0 and right.any()


def test_the_run_size_for_a_power_grows_with_the_power_asked():
    w = world()
    assert sized_users(w, 0.05, 0.95) > sized_users(w, 0.05, 0.8) > 0


def test_the_benchmark_figures_on_a_hand_made_world():
    figures = run_benchmark(
        world(), RunConfig(aa_runs=20, ab_runs=20, interleaving_runs=20, looks=20)
    )
    assert figures["ab_power"] >= 0.8 and figures["interleaving_power"] == 1.0
    assert figures["ab_effect_size"] == pytest.approx(examination(K)[1] / examination(K)[3] - 1)
    assert (
        figures["interleaving_impressions_to_decide_p50"] < figures["ab_impressions_to_decide_p50"]
    )


def test_a_tiny_run_through_the_command_line(tmp_path: Path):
    out = tmp_path / "experiments.json"
    command = (
        "bench experiments --dataset ml-latest-small --model transition --max-users 25 "
        "--requests-per-user 2 --runs 4 --users-per-run 200 --check-users 60"
    )
    args = build_parser().parse_args([*command.split(), "--json", str(out)])
    assert args.func(args) == 0
    figures = json.loads(out.read_text())
    for key in (
        "aa_runs", "aa_false_positive_rate", "ab_runs", "ab_power", "ab_effect_size",
        "interleaving_runs", "interleaving_power", "interleaving_impressions_to_decide_p50",
        "ab_impressions_to_decide_p50", "machine",
    ):  # fmt: skip
        assert key in figures
    assert figures["aa_runs"] == figures["ab_runs"] == figures["interleaving_runs"] == 4
    assert figures["population_users"] == 25 and figures["requests"] <= 50
    # the fast path and the whole read-out path (impressions → attribution → read_out) agree
    assert figures["check_ab_ctr_diff_abs_error"] < 1e-12
    assert figures["check_interleaving_wins_equal"] is True
