"""Fit a ranker on a split and write its checkpoint; load one back, checked against a split.

What ``aether train``, ``aether eval`` (which fits a protocol's ranker when none is given) and
``aether ensemble`` share. A checkpoint records the data it was fitted on (``split_metadata``:
dataset, split name, cut-offs, kind of temporal request), so a ranker fitted on other data is
refused rather than evaluated against requests it may have trained on.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from core.errors import ConfigError, ModelError
from interactions.movielens import load_split
from interactions.sequences import Split
from ranker.checkpoint import (
    HISTORY_ALL,
    HISTORY_WITHOUT_DISMISSED,
    Checkpoint,
    ensemble_members,
    load_checkpoint,
    save_checkpoint,
)
from ranker.data import ItemVocabulary
from ranker.ensemble import SASRecEnsemble
from ranker.train import TrainConfig, TrainResult, train_sasrec, validation_metrics

log = logging.getLogger(__name__)


def split_metadata(split: Split, dataset: str) -> dict[str, Any]:
    """What a checkpoint records about the data it was fitted on."""
    return {
        "dataset": dataset,
        "split": split.name,
        "cutoff_ms": split.cutoff_ms,
        "validation_cutoff_ms": split.validation_cutoff_ms,
        "temporal_requests": split.temporal_requests,
        "train_dismissals": sum(len(d) for d in split.train_dismissals.values()),
        # Serving feeds the model the same kind of sequence (``serving.pipeline.model_history``).
        "history": HISTORY_WITHOUT_DISMISSED if split.train_dismissals else HISTORY_ALL,
    }


def fit_and_save(
    split: Split,
    dataset: str,
    out: Path,
    model_config: Mapping[str, Any] | None = None,
    train_config: TrainConfig | None = None,
    *,
    threads: int | None = None,
) -> TrainResult:
    """Fit a SASRec on ``split`` (selected on its validation requests) and write it to ``out``
    with its training figures and ``split_metadata``. ``threads`` sets torch's intra-op threads."""
    if threads:
        torch.set_num_threads(threads)
    train_config = train_config or TrainConfig()
    result = train_sasrec(
        split.train,
        split.validation,
        model_config,
        train_config,
        dismissals=split.train_dismissals or None,
    )
    metadata = result.metadata(train_config) | split_metadata(split, dataset)
    version = save_checkpoint(out, result.model, result.vocab, metadata)
    log.info("wrote %s (%s)", out, version)
    return result


def check_fitted_on(checkpoint: Checkpoint, path: Path, dataset: str, split: Split) -> None:
    """Raise ``ModelError`` unless ``checkpoint`` (read from ``path``) was fitted on ``split`` of
    ``dataset``: same split, same temporal cut-off, selected on the same kind of request."""
    meta = checkpoint.metadata
    if meta.get("dataset") != dataset or meta.get("split") != split.name:
        raise ModelError(
            f"{path} was trained on {meta.get('dataset')}/{meta.get('split')}, "
            f"not {dataset}/{split.name}"
        )
    if (
        split.cutoff_ms is not None
        and meta.get("validation_cutoff_ms") != split.validation_cutoff_ms
    ):
        raise ModelError(f"{path} was trained with another temporal cut-off")
    # checkpoints from before the request kinds existed were selected on the first-item ones
    recorded = meta.get("temporal_requests", "first")
    if split.temporal_requests is not None and recorded != split.temporal_requests:
        raise ModelError(
            f"{path} was selected on {recorded!r} temporal requests, not "
            f"{split.temporal_requests!r} (see --temporal-requests)"
        )


def load_or_fit(
    split: Split,
    dataset: str,
    checkpoint: Path | None,
    fit_into: Path,
    model_config: Mapping[str, Any] | None = None,
    train_config: TrainConfig | None = None,
    *,
    threads: int | None = None,
) -> tuple[Checkpoint, Path]:
    """Load ``checkpoint`` (checked against the split), or, when it is None, fit one into
    ``fit_into``; returns the ranker and the path it was read from."""
    if checkpoint is None:
        log.info("no %s checkpoint given: training one into %s", split.name, fit_into)
        fit_and_save(split, dataset, fit_into, model_config, train_config, threads=threads)
        checkpoint = fit_into
    loaded = load_checkpoint(checkpoint)
    check_fitted_on(loaded, checkpoint, dataset, split)
    return loaded, checkpoint


# the split names checkpoints record -> the split kind that rebuilds them with validation requests
_VALIDATED_KINDS = {"leave-one-out": "loo", "temporal": "temporal"}


def ensemble_validation_figures(members: Sequence[Checkpoint], data: Path) -> dict[str, float]:
    """NDCG@10 and HR@10 of the members' mean logit on the validation requests they were
    selected on, rebuilt from ``data`` and the split their metadata records: the figure to
    choose between ensembles by, as ``best_validation_ndcg10`` is for one model."""
    models = ensemble_members(members)
    meta = members[0].metadata
    kind = _VALIDATED_KINDS.get(meta.get("split", ""))
    if kind is None:
        raise ConfigError(
            f"the members were fitted on split {meta.get('split')!r}, which has no validation "
            f"requests to measure the ensemble on; leave out --data"
        )
    # checkpoints from before the request kinds existed were selected on the first-item ones
    split = load_split(meta["dataset"], data, kind, meta.get("temporal_requests") or "first")
    vocab = members[0].vocab
    rebuilt = ItemVocabulary.from_sequences(split.train.values())
    if rebuilt.item_ids != vocab.item_ids or split.validation_cutoff_ms != meta.get(
        "validation_cutoff_ms"
    ):
        raise ConfigError(
            f"{data} gives another {split.name} split than the members were fitted on "
            f"(its training items or validation cut-off differ): is it the same dataset?"
        )
    ndcg, hr = validation_metrics(SASRecEnsemble(models), vocab, split.validation)
    figures = {"best_validation_ndcg10": ndcg, "best_validation_hr10": hr}
    log.info("ensemble on %d validation requests: %s", len(split.validation), figures)
    return figures
