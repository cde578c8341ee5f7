"""A tiny train + evaluate run on synthetic sequences (seconds): the whole path works and learns."""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

import pytest
import torch
from ranker_synthetic import synthetic_items, synthetic_ratings, write_movielens_small_layout

from aether.cli import eval as eval_cli
from aether.cli import train as train_cli
from evaluation.runner import evaluate_leave_one_out
from interactions.sequences import leave_one_out
from ranker.checkpoint import load_checkpoint
from ranker.scoring import SASRecRanker
from ranker.train import TrainConfig, train_sasrec

TINY_MODEL = {"hidden": 16, "n_blocks": 1, "n_heads": 1, "dropout": 0.1, "max_length": 16}


def test_sasrec_learns_the_sequential_pattern_and_beats_popularity() -> None:
    split = leave_one_out(synthetic_ratings())
    result = train_sasrec(
        split.train,
        split.validation,
        TINY_MODEL,
        TrainConfig(
            epochs=40, batch_size=32, learning_rate=1e-2, patience=40, progress=False, seed=0
        ),
    )
    assert result.best_validation_ndcg10 > 0.5  # "next = last + 1" is easy to learn
    outcome = evaluate_leave_one_out(split, synthetic_items(), result.model, result.vocab)
    assert outcome.figures["sasrec"]["ndcg10"] > 2 * outcome.figures["popular"]["ndcg10"]
    assert 0.0 < outcome.figures["sasrec"]["coverage"] <= 1.0


def test_training_is_deterministic_under_a_seed() -> None:
    split = leave_one_out(synthetic_ratings(n_users=20))
    config = TrainConfig(epochs=2, batch_size=8, progress=False, seed=7)
    first = train_sasrec(split.train, split.validation, TINY_MODEL, config)
    second = train_sasrec(split.train, split.validation, TINY_MODEL, config)
    assert first.curve[-1]["loss"] == pytest.approx(second.curve[-1]["loss"])


def test_without_validation_it_trains_the_fixed_epochs_and_keeps_the_last_state() -> None:
    split = leave_one_out(synthetic_ratings(n_users=20))
    config = TrainConfig(epochs=3, batch_size=8, patience=1, progress=False, seed=7)
    result = train_sasrec(split.train, [], TINY_MODEL, config)
    assert result.epochs_run == result.best_epoch == 3  # no early stop, no "best" epoch 1
    assert [point["epoch"] for point in result.curve] == [1, 2, 3]
    assert math.isnan(result.best_validation_ndcg10)
    again = train_sasrec(split.train, [], TINY_MODEL, config)
    for name, tensor in result.model.state_dict().items():  # the last state, deterministically
        assert torch.equal(tensor, again.model.state_dict()[name])


def cli(module, argv: list[str]) -> int:  # type: ignore[no-untyped-def]
    parser = argparse.ArgumentParser()
    module.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.func(args))


TINY_FLAGS = [
    "--hidden",
    "16",
    "--blocks",
    "1",
    "--max-length",
    "16",
    "--lr",
    "1e-2",
    "--batch-size",
    "32",
    "--no-progress",
    "--seed",
    "0",
]


def test_train_and_eval_commands_write_checkpoint_json_and_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_movielens_small_layout(tmp_path / "data", synthetic_ratings(), synthetic_items())
    out = tmp_path / "ranker.pt"
    assert (
        cli(
            train_cli,
            [
                "train",
                "--dataset",
                "ml-latest-small",
                "--data",
                str(data),
                "--out",
                str(out),
                "--epochs",
                "15",
                *TINY_FLAGS,
            ],
        )
        == 0
    )
    ranker = SASRecRanker.from_checkpoint(out)
    assert load_checkpoint(out).metadata["split"] == "leave-one-out"
    assert ranker.score(["1", "2"], ["3", "30"]).shape == (2,)

    figures_path, report = tmp_path / "eval.json", tmp_path / "report"
    assert (
        cli(
            eval_cli,
            [
                "eval",
                "--dataset",
                "ml-latest-small",
                "--data",
                str(data),
                "--loo-checkpoint",
                str(out),
                "--save-dir",
                str(tmp_path),
                "--epochs",
                "3",
                "--bench-calls",
                "5",
                "--temporal-refit",
                "--json",
                str(figures_path),
                "--report",
                str(report),
                *TINY_FLAGS,
            ],
        )
        == 0
    )
    assert not re.search(r"\d+%\|", capsys.readouterr().err)  # --no-progress: no bar at all
    figures = json.loads(figures_path.read_text())
    for key in (
        "loo_ndcg10",
        "loo_hr10",
        "temporal_ndcg10",
        "temporal_best_baseline_ndcg10",
        "train_seconds",
        "machine",
        "loo_ease_ndcg10",
        "loo_transition_ndcg10",
        "loo_popular_ndcg10",
        "score200_p50_ms",
        "score200_p99_ms",
    ):
        assert key in figures, key
    assert not any(isinstance(v, dict | list) for v in figures.values())  # one flat object
    assert 0.0 <= figures["loo_ndcg10"] <= figures["loo_hr10"] <= 1.0
    assert (report / "report.md").is_file() and (report / "accuracy.png").stat().st_size > 0
    assert (tmp_path / "ranker-temporal-ml-latest-small.pt").is_file()  # trained on the fly
    # ... then re-fitted on everything before T for the epochs validation chose, for the test
    refit = load_checkpoint(tmp_path / "ranker-temporal-refit-ml-latest-small.pt").metadata
    chosen = load_checkpoint(tmp_path / "ranker-temporal-ml-latest-small.pt").metadata
    assert figures["temporal_refit"] is True
    assert refit["split"] == "temporal-refit" and refit["epochs_run"] == chosen["best_epoch"]
    assert figures["temporal_refit_epochs"] == chosen["best_epoch"]


def test_temporal_refit_needs_an_explicit_epoch_count(tmp_path: Path) -> None:
    from core.errors import ConfigError

    data = write_movielens_small_layout(tmp_path / "data", synthetic_ratings(), synthetic_items())
    argv = ["train", "--dataset", "ml-latest-small", "--data", str(data), "--split"]
    with pytest.raises(ConfigError, match="--epochs"):
        cli(train_cli, [*argv, "temporal-refit", "--out", str(tmp_path / "r.pt"), *TINY_FLAGS])


def test_eval_refuses_a_checkpoint_from_another_split(tmp_path: Path) -> None:
    data = write_movielens_small_layout(tmp_path / "data", synthetic_ratings(), synthetic_items())
    out = tmp_path / "temporal.pt"
    cli(
        train_cli,
        [
            "train",
            "--dataset",
            "ml-latest-small",
            "--data",
            str(data),
            "--split",
            "temporal",
            "--out",
            str(out),
            "--epochs",
            "1",
            *TINY_FLAGS,
        ],
    )
    from core.errors import ModelError

    with pytest.raises(ModelError):
        cli(
            eval_cli,
            [
                "eval",
                "--dataset",
                "ml-latest-small",
                "--data",
                str(data),
                "--no-bench",
                "--loo-checkpoint",
                str(out),
                "--skip-temporal",
                *TINY_FLAGS,
            ],
        )


def test_eval_refuses_a_temporal_checkpoint_selected_on_other_requests(tmp_path: Path) -> None:
    from core.errors import ModelError

    data = write_movielens_small_layout(tmp_path / "data", synthetic_ratings(), synthetic_items())
    common = ["--dataset", "ml-latest-small", "--data", str(data), *TINY_FLAGS]
    out, loo = tmp_path / "temporal-first.pt", tmp_path / "loo.pt"
    split = ["--split", "temporal", "--temporal-requests", "first", "--epochs", "1"]
    assert cli(train_cli, ["train", *common, *split, "--out", str(out)]) == 0
    assert load_checkpoint(out).metadata["temporal_requests"] == "first"
    assert cli(train_cli, ["train", *common, "--epochs", "1", "--out", str(loo)]) == 0
    argv = ["eval", *common, "--no-bench", "--loo-checkpoint", str(loo)]
    with pytest.raises(ModelError, match="'first' temporal requests, not 'every'"):
        cli(eval_cli, [*argv, "--temporal-checkpoint", str(out)])
