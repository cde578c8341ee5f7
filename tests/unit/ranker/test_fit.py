"""``ranker.fit``: a checkpoint records the data it was fitted on, and is refused on other data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ranker_synthetic import synthetic_ratings

from core.errors import ModelError
from interactions.sequences import filter_rare_items, leave_one_out, split_of_kind
from ranker.checkpoint import Checkpoint, load_checkpoint
from ranker.data import ItemVocabulary
from ranker.fit import check_fitted_on, fit_and_save, load_or_fit, split_metadata
from ranker.model import SASRec, SASRecConfig
from ranker.train import TrainConfig

RATINGS = filter_rare_items(synthetic_ratings(n_users=20))
TINY = {"hidden": 8, "n_blocks": 1, "max_length": 8}
ONE_EPOCH = TrainConfig(epochs=1, batch_size=16, progress=False)


def checkpoint(**metadata: Any) -> Checkpoint:
    model = SASRec(SASRecConfig(n_items=3, max_length=4, hidden=8, n_blocks=1))
    return Checkpoint(model, ItemVocabulary(("a", "b", "c")), "sasrec-x", metadata)


def test_a_checkpoint_of_the_same_split_is_accepted() -> None:
    for kind in ("loo", "temporal", "temporal-refit"):
        split = split_of_kind(RATINGS, kind)
        check_fitted_on(checkpoint(**split_metadata(split, "ml")), Path("r.pt"), "ml", split)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"dataset": "ml-1m"}, "ml-1m/temporal, not ml/temporal"),
        ({"split": "leave-one-out"}, "not ml/temporal"),
        ({"validation_cutoff_ms": 1}, "another temporal cut-off"),
        ({"temporal_requests": "first"}, "'first' temporal requests, not 'every'"),
    ],
)
def test_a_checkpoint_of_other_data_is_refused(change: dict[str, Any], message: str) -> None:
    split = split_of_kind(RATINGS, "temporal", "every")
    meta = split_metadata(split, "ml") | change
    with pytest.raises(ModelError, match=message):
        check_fitted_on(checkpoint(**meta), Path("r.pt"), "ml", split)


def test_a_checkpoint_from_before_request_kinds_counts_as_first_item_requests() -> None:
    first = split_of_kind(RATINGS, "temporal", "first")
    legacy = {k: v for k, v in split_metadata(first, "ml").items() if k != "temporal_requests"}
    check_fitted_on(checkpoint(**legacy), Path("r.pt"), "ml", first)
    every = split_of_kind(RATINGS, "temporal", "every")
    with pytest.raises(ModelError, match="'first' temporal requests"):
        check_fitted_on(checkpoint(**legacy), Path("r.pt"), "ml", every)


def test_load_or_fit_fits_only_when_no_checkpoint_is_given(tmp_path: Path) -> None:
    split = leave_one_out(RATINGS)
    fitted, path = load_or_fit(split, "ml", None, tmp_path / "new.pt", TINY, ONE_EPOCH)
    assert path == tmp_path / "new.pt" and fitted.metadata["split"] == "leave-one-out"
    assert fitted.metadata["epochs_run"] == 1 and fitted.metadata["dataset"] == "ml"
    again, same = load_or_fit(split, "ml", path, tmp_path / "unused.pt", TINY, ONE_EPOCH)
    assert same == path and again.model_version == fitted.model_version
    assert not (tmp_path / "unused.pt").exists()
    with pytest.raises(ModelError):  # a given checkpoint is checked against the split
        load_or_fit(split_of_kind(RATINGS, "temporal"), "ml", path, tmp_path / "x.pt")


def test_fit_and_save_records_the_split_with_the_training_figures(tmp_path: Path) -> None:
    split = split_of_kind(RATINGS, "temporal", "first")
    result = fit_and_save(split, "ml", tmp_path / "t.pt", TINY, ONE_EPOCH)
    meta = load_checkpoint(tmp_path / "t.pt").metadata
    assert {k: meta[k] for k in split_metadata(split, "ml")} == split_metadata(split, "ml")
    assert meta["best_epoch"] == result.best_epoch and meta["train_config"]["epochs"] == 1
