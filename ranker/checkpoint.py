"""Checkpoints: one ``torch.save`` file with everything needed to score again.

Layout (a plain dict, loadable with ``weights_only=True``): ``format``, ``model_version``,
``config`` (SASRecConfig fields), ``item_ids`` (the vocabulary, index i+1 = item_ids[i]),
``state_dict`` and ``metadata`` (training figures, dataset, protocol).

An ensemble checkpoint (``aether ensemble``, :func:`save_ensemble_checkpoint`) has ``format``,
``model_version``, ``item_ids``, ``metadata`` and ``members``: one ``{model_version, config,
state_dict, metadata}`` per member. :func:`load_checkpoint` reads both kinds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from core.errors import ModelError, NotFoundError
from ranker.data import ItemVocabulary
from ranker.ensemble import RankingModel, SASRecEnsemble
from ranker.model import SASRec, SASRecConfig

FORMAT = "aetherrec.sasrec.v1"
ENSEMBLE_FORMAT = "aetherrec.sasrec-ensemble.v1"
# Metadata every member of an ensemble must share: they were fitted on the same data.
SHARED_METADATA = ("dataset", "split", "cutoff_ms", "validation_cutoff_ms", "temporal_requests")
# A checkpoint's ``metadata["history"]``: what its training sequences held.
HISTORY_ALL = "all_interactions"
HISTORY_WITHOUT_DISMISSED = "without_dismissed"


@dataclass
class Checkpoint:
    model: RankingModel
    vocab: ItemVocabulary
    model_version: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def keeps_dismissed(self) -> bool:
        """Trained on histories with dismissed items in them (``history_keeps_dismissed``)."""
        return history_keeps_dismissed(self.metadata)


def history_keeps_dismissed(metadata: dict[str, Any]) -> bool:
    """Whether a checkpoint was trained on sequences with dismissed items in them: its
    ``history`` (``ranker.fit.split_metadata``); a checkpoint older than that key was trained
    without dismissed items exactly when it counted some ``train_dismissals``."""
    history = metadata.get("history")
    if history is not None:
        return bool(history == HISTORY_ALL)
    return not metadata.get("train_dismissals")


def model_version_of(model: SASRec, vocab: ItemVocabulary, prefix: str = "sasrec") -> str:
    """A content hash of weights and vocabulary: the same model always gets the same version."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update("\n".join(vocab.item_ids).encode())
    return f"{prefix}-{digest.hexdigest()[:12]}"


def save_checkpoint(
    path: str | Path,
    model: SASRec,
    vocab: ItemVocabulary,
    metadata: dict[str, Any] | None = None,
    model_version: str | None = None,
) -> str:
    """Write the checkpoint; returns its model version."""
    version = model_version or model_version_of(model, vocab)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "format": FORMAT,
            "model_version": version,
            "config": model.config.to_dict(),
            "item_ids": list(vocab.item_ids),
            "state_dict": model.state_dict(),
            "metadata": metadata or {},
        },
        path,
    )
    return version


def ensemble_members(members: Sequence[Checkpoint]) -> list[SASRec]:
    """The members' models, after checking they can form one ensemble: two or more single
    models sharing the vocabulary and the data they were fitted on (dataset, split, cut-offs);
    :class:`ModelError` otherwise."""
    if len(members) < 2:
        raise ModelError("an ensemble needs two or more member checkpoints")
    models = [m.model for m in members if isinstance(m.model, SASRec)]
    if len(models) != len(members):
        raise ModelError("ensemble members must be single models, not ensembles")
    first = members[0]
    for member in members[1:]:
        if member.vocab.item_ids != first.vocab.item_ids:
            raise ModelError(
                f"{member.model_version} and {first.model_version} have different vocabularies"
            )
        for key in SHARED_METADATA:
            if member.metadata.get(key) != first.metadata.get(key):
                raise ModelError(
                    f"ensemble members differ in {key}: {first.metadata.get(key)!r} vs "
                    f"{member.metadata.get(key)!r}"
                )
        if history_keeps_dismissed(member.metadata) != history_keeps_dismissed(first.metadata):
            raise ModelError(
                f"{member.model_version} and {first.model_version} were trained on different "
                "histories (one with dismissed items, one without)"
            )
    return models


def save_ensemble_checkpoint(
    path: str | Path, members: Sequence[Checkpoint], metadata: dict[str, Any] | None = None
) -> str:
    """Write one checkpoint that scores with the mean logit of ``members``; returns its version.

    ``train_seconds`` of the ensemble is the sum over members; ``metadata`` adds figures of
    the ensemble itself (``aether ensemble --data`` adds its validation figures)."""
    members = list(members)
    models = ensemble_members(members)
    first = members[0]
    versions = [m.model_version for m in members]
    version = "sasrec-ens-" + hashlib.sha256("\n".join(versions).encode()).hexdigest()[:12]
    metadata = (
        {key: first.metadata.get(key) for key in SHARED_METADATA}
        | {
            "history": HISTORY_ALL
            if history_keeps_dismissed(first.metadata)
            else HISTORY_WITHOUT_DISMISSED,
            "train_seconds": sum(float(m.metadata.get("train_seconds", 0.0)) for m in members),
            "members": [{"model_version": m.model_version, **m.metadata} for m in members],
        }
        | (metadata or {})
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "format": ENSEMBLE_FORMAT,
            "model_version": version,
            "item_ids": list(first.vocab.item_ids),
            "members": [
                {
                    "model_version": member.model_version,
                    "config": model.config.to_dict(),
                    "state_dict": model.state_dict(),
                }
                for member, model in zip(members, models, strict=True)
            ],
            "metadata": metadata,
        },
        path,
    )
    return version


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` or :func:`save_ensemble_checkpoint`
    (weights-only unpickling)."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"checkpoint {path} not found (train one with `aether train`)")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        raise ModelError(f"cannot read checkpoint {path}: {exc}") from exc
    kind = blob.get("format") if isinstance(blob, dict) else None
    if kind not in (FORMAT, ENSEMBLE_FORMAT):
        raise ModelError(f"{path} is not an {FORMAT} or {ENSEMBLE_FORMAT} checkpoint")
    vocab = ItemVocabulary(tuple(blob["item_ids"]))
    if kind == FORMAT:
        model: RankingModel = _model(path, blob, vocab)
    else:
        model = SASRecEnsemble([_model(path, member, vocab) for member in blob["members"]])
    model.eval()
    return Checkpoint(model, vocab, str(blob["model_version"]), dict(blob["metadata"]))


def _model(path: Path, blob: dict[str, Any], vocab: ItemVocabulary) -> SASRec:
    config = SASRecConfig(**blob["config"])
    if config.n_items != len(vocab):
        raise ModelError(f"{path}: config has {config.n_items} items, vocabulary {len(vocab)}")
    model = SASRec(config)
    model.load_state_dict(blob["state_dict"])
    return model
