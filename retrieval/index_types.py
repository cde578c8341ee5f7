"""Values the item index is configured and fed with (no Milvus import)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class IndexConfig:
    """How collections are built and searched. ``nlist=None`` picks ~4·sqrt(n), in [16, 1024]."""

    # "auto": FLAT up to ``flat_max_items`` (exact; at 100k items it met the latency and recall
    # targets on Milvus Lite where IVF_FLAT lost recall: docs/benchmarks/retrieval.md), IVF_FLAT
    # above. Or FLAT, IVF_FLAT, AUTOINDEX, and, on a Milvus server only (Milvus Lite 2.5.1
    # refuses it), HNSW.
    index_type: str = "auto"
    flat_max_items: int = 200_000
    nlist: int | None = None
    nprobe: int = 32
    hnsw_m: int = 16
    hnsw_ef_construction: int = 200
    # HNSW search breadth; Milvus needs ef >= limit, so a search uses max(hnsw_ef, limit).
    hnsw_ef: int = 64
    keep_versions: int = 2
    max_categories: int = 64
    max_pushed_exclusions: int = 1000
    timeout_s: float = 60.0
    # Rows per insert call. Milvus Lite 2.5.1 slows down far more than linearly with the batch
    # (docs/benchmarks/retrieval.md, "Insert batch size").
    insert_batch: int = 1000

    def resolve_index_type(self, n: int) -> str:
        if self.index_type.lower() != "auto":
            return self.index_type
        return "FLAT" if n <= self.flat_max_items else "IVF_FLAT"


@dataclass(frozen=True)
class ItemRows:
    """Items to index: ids, a float32 matrix (one row per id) and optional metadata columns."""

    item_ids: Sequence[str]
    vectors: np.ndarray
    categories: Sequence[Sequence[str]] | None = None
    available: Sequence[bool] | None = None
    created_time_ms: Sequence[int] | None = None

    def __post_init__(self) -> None:
        n = len(self.item_ids)
        if self.vectors.ndim != 2 or self.vectors.shape[0] != n:
            raise ValueError(f"vectors must be ({n}, dim), got {self.vectors.shape}")
        for name in ("categories", "available", "created_time_ms"):
            column = getattr(self, name)
            if column is not None and len(column) != n:
                raise ValueError(f"{name} has {len(column)} rows, expected {n}")
