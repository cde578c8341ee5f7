"""Stores for the live-release tests: small SASRec checkpoints, their item embeddings indexed in
Milvus Lite and registered in the real registry folder, users and items in real Redis/Feast."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.settings import BanditSettings, Settings
from features.rows import ItemFeatureRow, UserFeatureRow
from features.store import FeastOnlineStore, apply_repo
from lifecycle.publish import Published, publish_index
from lifecycle.registry import Registry
from ranker.checkpoint import save_checkpoint
from ranker.data import ItemVocabulary
from ranker.model import SASRec, SASRecConfig
from ranker.scoring import SASRecRanker
from retrieval.catalog import ItemCatalog, ItemMeta
from retrieval.item_vectors import ItemVectors, ranker_item_vectors

T0 = 1_700_000_000_000


def quiet_settings(settings: Settings, **serving: object) -> Settings:
    """No exploration (slates are then a function of the release alone) and a request budget
    that a shared, loaded machine does not blow."""
    return settings.model_copy(
        update={
            "bandit": BanditSettings(exploration_slots=0),
            "serving": settings.serving.model_copy(update={"deadline_ms": 5000, **serving}),
        }
    )


def random_ranker(path: Path, item_ids: Sequence[str], seed: int) -> SASRecRanker:
    """An untrained SASRec over ``item_ids``: enough for a release (its scores are its own)."""
    torch.manual_seed(seed)
    model = SASRec(SASRecConfig(n_items=len(item_ids), max_length=16, hidden=16, n_blocks=1))
    save_checkpoint(path, model.eval(), ItemVocabulary(tuple(item_ids)), {"dataset": "test"})
    return SASRecRanker.from_checkpoint(path)


@dataclass(frozen=True)
class RegisteredPair:
    ranker: SASRecRanker
    published: Published

    @property
    def label(self) -> str:
        return f"{self.ranker.model_version}@{self.published.index.version}"


def register_pair(
    settings: Settings,
    registry: Registry,
    checkpoint: Path,
    item_ids: Sequence[str],
    seed: int,
    catalog: ItemCatalog,
    *,
    promote: bool,
) -> RegisteredPair:
    """A ranker and an index of its own item embeddings, registered (and promoted), as
    ``aether index --ranker-checkpoint`` would leave them."""
    ranker = random_ranker(checkpoint, item_ids, seed)
    registry.register_model(checkpoint, ranker.model_version, {"dataset": "test"})
    vectors = ranker_item_vectors(checkpoint)
    published = publish_index(
        settings.milvus,
        settings.deployment,
        vectors,
        catalog,
        promote=promote,
        model=ranker.model_version,
        registry=registry,
        progress=False,
    )
    return RegisteredPair(ranker, published)


def catalogue(item_ids: Sequence[str], **available: bool) -> ItemCatalog:
    return ItemCatalog(
        ItemMeta(i, title=f"Movie {i}", categories=("Drama",), available=available.get(i, True))
        for i in item_ids
    )


def write_rows(
    settings: Settings,
    items: Sequence[str],
    users: dict[str, tuple[str, ...]],
    *,
    popularity: dict[str, float] | None = None,
    unavailable: Sequence[str] = (),
    catalog: ItemCatalog | None = None,
) -> None:
    """Item rows as the worker writes them (titles and categories from ``catalog`` when
    given) and user rows with these histories."""
    apply_repo(settings.redis, settings.deployment)
    store = FeastOnlineStore(settings.redis, settings.deployment)
    metas = catalog or catalogue(items)
    try:
        store.write_items(
            [
                ItemFeatureRow(
                    item,
                    T0,
                    popularity=(popularity or {}).get(item, 1.0),
                    title=metas[item].title,
                    categories=metas[item].categories,
                    created_time_ms=T0 - 10**10,
                    available=item not in unavailable,
                )
                for item in items
            ]
        )
        store.write_users(
            [UserFeatureRow(u, T0, recent_items=history) for u, history in users.items()]
        )
    finally:
        store.close()


def plain_vectors(item_ids: Sequence[str], matrix: np.ndarray, source: str) -> ItemVectors:
    return ItemVectors(list(item_ids), matrix.astype(np.float32), None, source)
