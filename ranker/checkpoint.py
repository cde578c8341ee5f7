"""Checkpoints: one ``torch.save`` file with everything needed to score again.

Layout (a plain dict, loadable with ``weights_only=True``): ``format``, ``model_version``,
``config`` (SASRecConfig fields), ``item_ids`` (the vocabulary, index i+1 = item_ids[i]),
``state_dict`` and ``metadata`` (training figures, dataset, protocol).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from aether.errors import ModelError, NotFoundError
from ranker.data import ItemVocabulary
from ranker.model import SASRec, SASRecConfig

FORMAT = "aetherrec.sasrec.v1"


@dataclass
class Checkpoint:
    model: SASRec
    vocab: ItemVocabulary
    model_version: str
    metadata: dict[str, Any] = field(default_factory=dict)


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


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (weights-only unpickling)."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"checkpoint {path} not found (train one with `aether train`)")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        raise ModelError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ModelError(f"{path} is not an {FORMAT} checkpoint")
    vocab = ItemVocabulary(tuple(blob["item_ids"]))
    config = SASRecConfig(**blob["config"])
    if config.n_items != len(vocab):
        raise ModelError(f"{path}: config has {config.n_items} items, vocabulary {len(vocab)}")
    model = SASRec(config)
    model.load_state_dict(blob["state_dict"])
    model.eval()
    return Checkpoint(model, vocab, str(blob["model_version"]), dict(blob["metadata"]))
