"""``aether ope`` writes its flat JSON; the MovieLens simulation runs and plots on a small replay."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from aether.cli import ope
from bandits.simulation import POLICIES, SimulationConfig, gini, plot_simulation, simulate
from interactions.movielens import load_movielens


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    ope.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


@pytest.mark.usefixtures("open_bandit_samples")
def test_ope_command_writes_the_required_flat_keys(tmp_path):
    out = tmp_path / "ope.json"
    args = _parse(
        [
            "ope",
            "--dataset",
            "open-bandit",
            "--campaign",
            "all",
            "--bootstrap",
            "50",
            "--json",
            str(out),
        ]
    )
    assert args.func(args) == 0
    figures = json.loads(out.read_text())
    required = ["obd_bts_logged_ctr", "obd_random_logged_ctr", "machine"]
    for direction in ("bts_from_random", "random_from_bts"):
        for name in ("ipw", "snipw", "dr"):
            key = f"obd_{direction}_{name}"
            required += [key, f"{key}_ci_low", f"{key}_ci_high"]
    assert set(required) <= set(figures)
    assert all(not isinstance(v, dict | list) for v in figures.values())  # one flat object
    assert figures["obd_random_logged_ctr"] == pytest.approx(0.0038)


def test_simulation_runs_and_plots(tmp_path):
    ratings = load_movielens("ml-latest-small").ratings
    result = simulate(ratings, SimulationConfig(n_requests=800, seed=3))
    again = simulate(ratings, SimulationConfig(n_requests=800, seed=3))
    for name in POLICIES:
        assert 0.0 <= result.figures[f"sim_{name}_ctr"] <= 1.0
        assert 0.0 < result.figures[f"sim_{name}_catalogue_coverage"] <= 1.0
        assert result.figures[f"sim_{name}_ctr"] == again.figures[f"sim_{name}_ctr"]  # seeded
    png = plot_simulation(result, tmp_path / "sim.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gini_bounds():
    assert gini(np.ones(10)) == pytest.approx(0.0)
    assert gini(np.array([0.0] * 99 + [1.0])) == pytest.approx(0.99)
