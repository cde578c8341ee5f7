"""Ensembles of SASRecs: the mean of the members' logits, through every interface that scores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from ranker_synthetic import synthetic_items, synthetic_ratings, write_movielens_small_layout
from test_end_to_end import TINY_FLAGS, cli

from aether.cli import ensemble as ensemble_cli
from aether.cli import eval as eval_cli
from aether.cli import train as train_cli
from core.errors import ConfigError, ModelError
from ranker.checkpoint import Checkpoint, load_checkpoint, save_ensemble_checkpoint
from ranker.data import ItemVocabulary
from ranker.ensemble import SASRecEnsemble
from ranker.model import SASRec, SASRecConfig
from ranker.scoring import UNKNOWN_ITEM_SCORE, SASRecRanker
from ranker.train import score_all_items

VOCAB = ItemVocabulary(tuple(f"i{k}" for k in range(20)))
SHARED = {
    "dataset": "synthetic",
    "split": "leave-one-out",
    "cutoff_ms": None,
    "temporal_requests": None,
}


def member(seed: int, hidden: int = 16, **metadata: Any) -> Checkpoint:
    torch.manual_seed(seed)
    config = SASRecConfig(n_items=20, max_length=8, hidden=hidden, n_blocks=1, dropout=0.1)
    meta = SHARED | {"train_seconds": 10.0 + seed, "train_config": {"seed": seed}} | metadata
    return Checkpoint(SASRec(config).eval(), VOCAB, f"sasrec-m{seed}", meta)


@pytest.fixture
def members() -> list[Checkpoint]:
    return [member(1), member(2, hidden=8)]  # members may differ in width


@pytest.fixture
def ensemble_path(tmp_path: Path, members: list[Checkpoint]) -> Path:
    path = tmp_path / "ensemble.pt"
    save_ensemble_checkpoint(path, members)
    return path


def test_ensemble_scores_are_the_mean_of_its_members_scores(
    members: list[Checkpoint], ensemble_path: Path
) -> None:
    ensemble = SASRecRanker.from_checkpoint(ensemble_path)
    singles = [SASRecRanker(m) for m in members]
    histories = [["i1", "i2", "i3"], ["i9"], ["i4"] * 12]
    candidates = [["i4", "i5", "i0"], ["i0", "i1", "i9"], ["i7", "i8"]]
    for history, items in zip(histories, candidates, strict=True):
        mean = np.mean([s.score(history, items) for s in singles], axis=0)
        np.testing.assert_allclose(ensemble.score(history, items), mean, rtol=1e-5, atol=1e-6)
    for got, history, items in zip(
        ensemble.score_batch(histories, candidates), histories, candidates, strict=True
    ):
        np.testing.assert_allclose(got, ensemble.score(history, items), rtol=1e-5, atol=1e-6)
    # the whole-catalogue path of the evaluation and of training's validation
    mean_all = np.mean([score_all_items(m.model, VOCAB, histories) for m in members], axis=0)
    ensemble_all = score_all_items(load_checkpoint(ensemble_path).model, VOCAB, histories)
    np.testing.assert_allclose(ensemble_all, mean_all, rtol=1e-5, atol=1e-6)


def test_unknown_candidates_still_sink_below_every_known_item(ensemble_path: Path) -> None:
    scores = SASRecRanker.from_checkpoint(ensemble_path).score(["i1"], ["i3", "new", "i4"])
    assert scores[1] == UNKNOWN_ITEM_SCORE < scores[[0, 2]].min()


def test_retrieval_vectors_reproduce_the_ensemble_scores(ensemble_path: Path) -> None:
    """User vector · item vectors is the ensemble logit, so ANN search over the concatenated
    item vectors ranks as the ensemble does."""
    ranker = SASRecRanker.from_checkpoint(ensemble_path)
    ids, matrix = ranker.item_embeddings()
    assert matrix.shape == (20, 16 + 8) and ids == list(VOCAB.item_ids)
    for history in (["i3", "i7", "i1"], []):
        np.testing.assert_allclose(
            matrix @ ranker.encode_user(history), ranker.score(history, ids), rtol=1e-4, atol=1e-5
        )


def test_round_trip_keeps_version_metadata_and_scores(
    ensemble_path: Path, members: list[Checkpoint], tmp_path: Path
) -> None:
    loaded = load_checkpoint(ensemble_path)
    assert isinstance(loaded.model, SASRecEnsemble) and not loaded.model.training
    assert loaded.model_version.startswith("sasrec-ens-")
    again = tmp_path / "again.pt"
    assert save_ensemble_checkpoint(again, members) == loaded.model_version  # content-derived
    meta = loaded.metadata
    assert {k: meta[k] for k in SHARED} == SHARED
    assert meta["train_seconds"] == pytest.approx(11.0 + 12.0)
    assert [m["model_version"] for m in meta["members"]] == ["sasrec-m1", "sasrec-m2"]
    assert [m["train_config"]["seed"] for m in meta["members"]] == [1, 2]


@pytest.mark.parametrize(
    ("second", "message"),
    [
        (Checkpoint(member(2).model, ItemVocabulary(tuple("abc")), "x", SHARED), "vocabular"),
        (member(2, split="temporal"), "split"),
        (member(2, dataset="ml-1m"), "dataset"),
    ],
)
def test_members_fitted_on_other_data_are_refused(
    tmp_path: Path, second: Checkpoint, message: str
) -> None:
    with pytest.raises(ModelError, match=message):
        save_ensemble_checkpoint(tmp_path / "e.pt", [member(1), second])
    assert not (tmp_path / "e.pt").exists()


def test_one_member_or_a_nested_ensemble_is_refused(tmp_path: Path, ensemble_path: Path) -> None:
    with pytest.raises(ModelError, match="two or more"):
        save_ensemble_checkpoint(tmp_path / "e.pt", [member(1)])
    with pytest.raises(ModelError, match="single models"):
        save_ensemble_checkpoint(tmp_path / "e.pt", [member(1), load_checkpoint(ensemble_path)])
    with pytest.raises(ModelError, match="n_items, max_length"):
        SASRecEnsemble([member(1).model, SASRec(SASRecConfig(n_items=20, max_length=9))])


def test_ensemble_command_and_eval_report_the_members(tmp_path: Path) -> None:
    data = write_movielens_small_layout(tmp_path / "data", synthetic_ratings(), synthetic_items())
    paths = [tmp_path / f"s{seed}.pt" for seed in (0, 1)]
    for seed, path in enumerate(paths):
        argv = ["train", "--dataset", "ml-latest-small", "--data", str(data), "--out", str(path)]
        assert cli(train_cli, [*argv, "--epochs", "4", *TINY_FLAGS, "--seed", str(seed)]) == 0
    out = tmp_path / "ensemble.pt"
    argv = ["ensemble", *map(str, paths), "--out", str(out), "--data", str(data)]
    assert cli(ensemble_cli, argv) == 0
    figures_path = tmp_path / "eval.json"
    common = ["--dataset", "ml-latest-small", "--data", str(data), "--no-bench", *TINY_FLAGS]
    argv = ["eval", *common, "--loo-checkpoint", str(out), "--skip-temporal"]
    assert cli(eval_cli, [*argv, "--json", str(figures_path)]) == 0
    figures = json.loads(figures_path.read_text())
    seeds = [load_checkpoint(p).metadata for p in paths]
    assert figures["loo_ensemble_members"] == 2
    assert [figures[f"loo_member{i}_seed"] for i in (0, 1)] == [0, 1]
    assert figures["loo_member1_best_validation_ndcg10"] == seeds[1]["best_validation_ndcg10"]
    assert figures["train_seconds"] == pytest.approx(sum(m["train_seconds"] for m in seeds))
    assert 0.0 <= figures["loo_ndcg10"] <= figures["loo_hr10"] <= 1.0
    assert not any(isinstance(v, dict | list) for v in figures.values())  # still one flat object
    # --data measured the ensemble on validation as `aether eval` does, by another code path
    validation = load_checkpoint(out).metadata
    assert validation["best_validation_ndcg10"] == pytest.approx(figures["loo_val_sasrec_ndcg10"])
    assert validation["best_validation_ndcg10"] <= validation["best_validation_hr10"] <= 1.0


def test_ensemble_validation_refuses_other_data_or_a_split_without_validation(
    tmp_path: Path,
) -> None:
    data = write_movielens_small_layout(tmp_path / "data", synthetic_ratings(), synthetic_items())
    other = write_movielens_small_layout(
        tmp_path / "other", synthetic_ratings(n_items=30), synthetic_items(30)
    )
    for split in ("loo", "temporal-refit"):
        paths = []
        for seed in (0, 1):
            paths.append(str(tmp_path / f"{split}-{seed}.pt"))
            argv = ["train", "--dataset", "ml-latest-small", "--data", str(data), "--out"]
            extra = ["--epochs", "1", *TINY_FLAGS, "--seed", str(seed), "--split", split]
            assert cli(train_cli, [*argv, paths[-1], *extra]) == 0
        out = tmp_path / f"{split}-ens.pt"
        if split == "loo":
            with pytest.raises(ConfigError, match="same dataset"):
                cli(ensemble_cli, ["ensemble", *paths, "--out", str(out), "--data", str(other)])
        else:
            with pytest.raises(ConfigError, match="no validation"):
                cli(ensemble_cli, ["ensemble", *paths, "--out", str(out), "--data", str(data)])
        assert not out.exists()  # nothing written when it refuses


def test_temporal_refit_of_an_ensemble_is_refused_clearly(tmp_path: Path) -> None:
    data = write_movielens_small_layout(tmp_path / "data", synthetic_ratings(), synthetic_items())
    temporal = []
    for seed in (0, 1):
        path = tmp_path / f"t{seed}.pt"
        argv = ["train", "--dataset", "ml-latest-small", "--data", str(data), "--out", str(path)]
        cli(train_cli, [*argv, "--split", "temporal", "--epochs", "1", *TINY_FLAGS])
        temporal.append(str(path))
    out = tmp_path / "t-ens.pt"
    cli(ensemble_cli, ["ensemble", *temporal, "--out", str(out)])
    argv = ["eval", "--dataset", "ml-latest-small", "--data", str(data), "--no-bench", *TINY_FLAGS]
    argv += ["--epochs", "1", "--save-dir", str(tmp_path), "--temporal-checkpoint", str(out)]
    with pytest.raises(ConfigError, match="not an ensemble"):
        cli(eval_cli, [*argv, "--temporal-refit"])
