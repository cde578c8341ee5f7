"""The item vectors an index is built from (what ``aether index`` publishes).

Three sources: a SASRec checkpoint's own item embeddings (serving then queries the index with that
ranker's user encoder, ``build_retriever.choose_user_encoder``), an ``.npz`` file
(``retrieval.embeddings``), or the PPMI-SVD baseline over the interactions. ``with_cold_items``
adds the catalogue items that have no vector, embedded from their text (``retrieval.content``), so
ANN can return cold items too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from retrieval.catalog import ItemCatalog
from retrieval.content import TextEncoder, embed_cold_items
from retrieval.embeddings import embeddings_model_version, load_embeddings, ppmi_svd_embeddings


@dataclass(frozen=True)
class ItemVectors:
    item_ids: list[str]
    matrix: np.ndarray  # (len(item_ids), dim) float32
    model_version: str | None  # the ranker whose own item embeddings these are; else None
    source: str  # where they came from, for people


def ranker_item_vectors(checkpoint: str | Path) -> ItemVectors:
    from ranker.scoring import SASRecRanker  # torch: only when a ranker is asked for

    ranker = SASRecRanker.from_checkpoint(checkpoint)
    item_ids, matrix = ranker.item_embeddings()
    return ItemVectors(item_ids, matrix, ranker.model_version, f"ranker {ranker.model_version}")


def file_item_vectors(path: str | Path) -> ItemVectors:
    item_ids, matrix = load_embeddings(path)
    return ItemVectors(item_ids, matrix, embeddings_model_version(path), f"file {path}")


def baseline_item_vectors(ratings: pd.DataFrame, dim: int = 64, seed: int = 0) -> ItemVectors:
    item_ids, matrix = ppmi_svd_embeddings(
        ratings["user_id"].tolist(), ratings["item_id"].tolist(), dim, seed=seed
    )
    return ItemVectors(item_ids, matrix, None, f"PPMI-SVD baseline (dim {matrix.shape[1]})")


def with_cold_items(
    vectors: ItemVectors, catalog: ItemCatalog, text_encoder: TextEncoder
) -> ItemVectors:
    """``vectors`` plus every catalogue item they lack, embedded from its title and categories
    and mapped into their space (so ``model_version`` is kept: the same user encoder fits)."""
    item_ids, matrix = embed_cold_items(vectors.item_ids, vectors.matrix, catalog, text_encoder)
    return ItemVectors(item_ids, matrix, vectors.model_version, vectors.source)
