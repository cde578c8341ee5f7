"""Both offline protocols on one dataset, as one flat figures object (what ``aether eval`` runs).

Each protocol's ranker is a given checkpoint, checked against the split, or fitted here first
(``ranker.fit.load_or_fit``). With ``temporal_refit`` the temporal test is answered by a ranker
re-fitted on every event before ``T`` for the epochs the temporal checkpoint chose on validation,
as the baselines are re-fitted; every choice is still made on validation, before ``T_val``.

The figures are flat (``<protocol>_<method>_<metric>``) so that one JSON object holds a whole run;
the latency benchmark and the machine description are added by the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from core.errors import ConfigError
from evaluation.runner import ProtocolResult, evaluate_leave_one_out, evaluate_temporal
from interactions.dismissals import with_dismissals
from interactions.movielens import load_movielens
from interactions.sequences import (
    Split,
    filter_rare_items,
    leave_one_out,
    temporal_refit_split,
    temporal_split,
)
from ranker.checkpoint import Checkpoint
from ranker.fit import load_or_fit
from ranker.train import TrainConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SuiteConfig:
    dataset: str
    data: Path | None = None
    loo_checkpoint: Path | None = None  # None: fitted into save_dir
    temporal_checkpoint: Path | None = None  # None: fitted into save_dir
    temporal_refit: bool = False  # implied by temporal_refit_checkpoint
    temporal_refit_checkpoint: Path | None = None
    save_dir: Path = Path("artifacts")  # where rankers fitted here are written
    skip_temporal: bool = False
    temporal_requests: str = "every"
    model_config: Mapping[str, Any] = field(default_factory=dict)  # for rankers fitted here
    train_config: TrainConfig = field(default_factory=TrainConfig)
    dismissals: bool = False  # rankers fitted here also learn from dismissals (rating <= 2)
    threads: int | None = None  # torch intra-op threads while fitting
    progress: bool = True


@dataclass
class SuiteResult:
    figures: dict[str, Any]  # one flat object
    results: list[ProtocolResult]  # per protocol, for the report
    curves: dict[str, list[Any]]  # validation curve of each ranker (each ensemble member)
    loo_checkpoint: Path  # the leave-one-out ranker evaluated (given or fitted here)


def run_suite(config: SuiteConfig) -> SuiteResult:
    data = load_movielens(config.dataset, config.data)
    ratings = filter_rare_items(data.ratings)
    flat: dict[str, Any] = {"dataset": config.dataset}
    flat["users"], flat["items"] = ratings["user_id"].nunique(), ratings["item_id"].nunique()
    flat["interactions"] = len(ratings)
    results, curves = [], {}

    def ranker(
        split: Split, checkpoint: Path | None, name: str, train_config: TrainConfig
    ) -> tuple[Checkpoint, Path]:
        if config.dismissals:  # the requests stay the same; only the training data changes
            split = with_dismissals(split, ratings)
        return load_or_fit(
            split,
            config.dataset,
            checkpoint,
            config.save_dir / f"ranker-{name}-{config.dataset}.pt",
            config.model_config,
            train_config,
            threads=config.threads,
        )

    loo = leave_one_out(ratings)
    model, loo_path = ranker(loo, config.loo_checkpoint, "loo", config.train_config)
    result = evaluate_leave_one_out(
        loo, data.items, model.model, model.vocab, progress=config.progress
    )
    results.append(result)
    flat.update(flatten_protocol(result, "loo"))
    flat["train_seconds"] = model.metadata.get("train_seconds")
    flat["loo_best_epoch"] = model.metadata.get("best_epoch")
    flat["loo_model_version"] = model.model_version
    flat.update(member_figures("loo", model.metadata))
    curves.update(training_curves("leave-one-out", model.metadata))

    if not config.skip_temporal:
        temporal = temporal_split(ratings, requests=config.temporal_requests)
        flat["temporal_requests"] = config.temporal_requests
        tmodel, _ = ranker(temporal, config.temporal_checkpoint, "temporal", config.train_config)
        test_model = None
        if config.temporal_refit or config.temporal_refit_checkpoint is not None:
            # Choices were made before T_val; re-fit on everything before T as the baselines
            # are, for exactly the number of epochs validation chose.
            if "members" in tmodel.metadata:
                raise ConfigError(
                    "--temporal-refit re-fits one model for the epochs it chose; give a single "
                    "`aether train --split temporal` checkpoint, not an ensemble"
                )
            refit_config = replace(config.train_config, epochs=tmodel.metadata["best_epoch"])
            refit_split = temporal_refit_split(ratings, temporal)
            refit, _ = ranker(
                refit_split, config.temporal_refit_checkpoint, "temporal-refit", refit_config
            )
            test_model = (refit.model, refit.vocab)
            flat["temporal_refit_epochs"] = refit.metadata.get("epochs_run")
            flat["temporal_refit_train_seconds"] = refit.metadata.get("train_seconds")
            flat["temporal_refit_model_version"] = refit.model_version
        flat["temporal_refit"] = test_model is not None
        result = evaluate_temporal(
            temporal,
            ratings,
            data.items,
            tmodel.model,
            tmodel.vocab,
            test_model=test_model,
            progress=config.progress,
        )
        results.append(result)
        flat.update(flatten_protocol(result, "temporal"))
        flat["temporal_train_seconds"] = tmodel.metadata.get("train_seconds")
        flat["temporal_best_epoch"] = tmodel.metadata.get("best_epoch")
        flat.update(member_figures("temporal", tmodel.metadata))
        flat["temporal_cutoff_ms"] = temporal.cutoff_ms
        flat["temporal_validation_cutoff_ms"] = temporal.validation_cutoff_ms
        curves.update(training_curves("temporal", tmodel.metadata))
    return SuiteResult(flat, results, curves, loo_path)


def report_notes(temporal_requests: str) -> list[str]:
    """How to read the report's figures: the protocol choices behind them."""
    return [
        "Every method ranks ALL catalogue items (no sampled negatives); the user's seen items are filtered.",
        "Ranks are pessimistic about ties. Model selection and λ/window choices use validation only.",
        f"Temporal requests: {temporal_requests!r} (every = each event after T with the history up to it; first = each user's first item after T). Figures are for requests whose history has >= 5 events; cold-start requests are in their own table.",
        "Gain intervals: paired bootstrap over users (all of a user's requests resampled together).",
        "Temporal: baselines are re-fitted on all events before T; the ranker is trained on events before T_val only.",
        "sasrec_pop = log-softmax(SASRec) + beta * log(1 + recent count), beta chosen on validation (0 = plain SASRec).",
    ]


def member_figures(prefix: str, metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Each ensemble member's own training figures, as flat keys (none for a single model)."""
    members = metadata.get("members") or []
    flat: dict[str, Any] = {f"{prefix}_ensemble_members": len(members) or None}
    for i, member in enumerate(members):
        for key in (
            "best_epoch",
            "best_validation_ndcg10",
            "best_validation_hr10",
            "train_seconds",
        ):
            flat[f"{prefix}_member{i}_{key}"] = member.get(key)
        flat[f"{prefix}_member{i}_seed"] = member.get("train_config", {}).get("seed")
    return flat


def training_curves(name: str, metadata: Mapping[str, Any]) -> dict[str, list[Any]]:
    """The validation curve of a checkpoint, or one per member of an ensemble."""
    members = metadata.get("members") or []
    if not members:
        return {name: metadata.get("curve", [])}
    return {
        f"{name}, seed {m.get('train_config', {}).get('seed', i)}": m.get("curve", [])
        for i, m in enumerate(members)
    }


def flatten_protocol(result: ProtocolResult, prefix: str) -> dict[str, Any]:
    """One protocol's figures as flat keys, with the ranker's gain over the best baseline."""
    flat: dict[str, Any] = {}
    for method, figures in result.figures.items():
        flat.update({f"{prefix}_{method}_{k}": v for k, v in figures.items()})
    for method, figures in result.cold.items():
        flat.update({f"{prefix}_cold_{method}_{k}": v for k, v in figures.items()})
    for method, value in result.validation_ndcg10.items():
        flat[f"{prefix}_val_{method}_ndcg10"] = value
    flat.update({f"{prefix}_chosen_{k}": v for k, v in result.chosen.items()})
    ours = result.figures["sasrec"]
    flat.update({f"{prefix}_{k}": ours[k] for k in ("ndcg10", "hr10", "mrr", "coverage")})
    best = result.against_best_baseline["sasrec"]["baseline"]
    flat[f"{prefix}_best_baseline"] = best
    flat[f"{prefix}_best_baseline_ndcg10"] = result.figures[best]["ndcg10"]
    for model, versus in result.against_best_baseline.items():
        name = prefix if model == "sasrec" else f"{prefix}_{model}"
        flat[f"{name}_gain_over_best_baseline"] = versus["gain"]
        flat[f"{name}_gain_ci95_low"] = versus["ci95_low"]
        flat[f"{name}_gain_ci95_high"] = versus["ci95_high"]
    return flat
