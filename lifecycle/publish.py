"""Index versions into Milvus and the registry; promotion of a (model, index) pair.

``publish_index`` is what ``aether index`` does: build a new collection version from item
vectors (``retrieval.item_vectors``), register it with its ids, vectors and content map, promote
it (by default) with the model that should rank over it, point the Milvus alias at it (for tools
that read the alias), and garbage-collect versions nothing may serve any more
(``Registry.protected_indexes``). ``promote`` is ``aether registry promote``.

Which model a new index is promoted with: the one given (``aether index --ranker-checkpoint``
registers it first), else the model of the release serving now, else the model registered last
(``aether train`` registers what it trains), else none (retrieval order).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

from core.errors import ConfigError
from core.settings import Deployment, MilvusSettings
from lifecycle.registry import IndexVersion, ModelVersion, Registry, Release, registration_order
from ranker.checkpoint import load_checkpoint
from retrieval.catalog import ItemCatalog
from retrieval.content import RidgeMap
from retrieval.index import IndexConfig, ItemIndex
from retrieval.item_vectors import ItemVectors
from retrieval.movielens_catalog import item_rows

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Published:
    index: IndexVersion
    release: Release | None  # None: registered, not promoted
    dropped: tuple[str, ...]  # index versions garbage-collected from Milvus


def index_version_name(deployment: Deployment, collection: str) -> str:
    """``<ns>_items_v3`` → ``items_v3``: the index part of a release label."""
    return collection.removeprefix(f"{deployment.namespace}_")


def model_to_pair(registry: Registry, model: str | None) -> str | None:
    """The model a newly published index is promoted with (module docstring)."""
    if model is not None:
        return model
    manifest = registry.read()
    if manifest.promoted is not None:
        return manifest.promoted.model
    if manifest.models:
        return max(manifest.models.values(), key=registration_order).version
    return None


def publish_index(
    milvus: MilvusSettings,
    deployment: Deployment,
    vectors: ItemVectors,
    catalog: ItemCatalog,
    *,
    content_map: RidgeMap | None = None,
    promote: bool = True,
    model: str | None = None,
    config: IndexConfig | None = None,
    registry: Registry | None = None,
    progress: bool = True,
    index: ItemIndex | None = None,
) -> Published:
    """Build, register and (``promote``) promote a new index version (module docstring).

    ``index``: an open index to build it with (kept open; ``config`` is then its own), for a
    process that serves from the same Milvus Lite file: a second client of it in one process
    would share, and on closing drop, the first one's connection."""
    registry = registry or Registry.for_deployment(deployment)
    opened = (
        contextlib.nullcontext(index)
        if index is not None
        else ItemIndex.from_settings(milvus, deployment, config)
    )
    with opened as index:
        number = index.build_version(
            item_rows(vectors.item_ids, vectors.matrix, catalog), progress=progress
        )
        collection = index.collection_name(number)
        entry = registry.register_index(
            version=index_version_name(deployment, collection),
            collection=collection,
            item_ids=vectors.item_ids,
            matrix=vectors.matrix,
            embedding_model_version=vectors.model_version,
            source=vectors.source,
            content_map=None if content_map is None else content_map.weights,
        )
        release = None
        if promote:
            release = registry.promote(model=model_to_pair(registry, model), index=entry.version)
            index.activate(number)
        dropped = _collect_garbage(index, registry, deployment)
    return Published(entry, release, dropped)


def promote(
    milvus: MilvusSettings,
    deployment: Deployment,
    *,
    model: str | None,
    index: str,
    registry: Registry | None = None,
) -> Release:
    """Promote a registered pair; the Milvus alias follows when Milvus answers (serving reads
    the registry, not the alias, so a failure there is only logged)."""
    registry = registry or Registry.for_deployment(deployment)
    before = registry.promoted()
    release = registry.promote(model=model, index=index)
    if before is not None and before.index == index:
        return release  # a new model over the same index: the alias already points there
    collection = registry.index(index).collection
    try:
        with ItemIndex.from_settings(milvus, deployment) as items:
            number = items.version_of(collection)
            if number is not None:
                items.activate(number)
    except Exception as exc:  # the registry is the source of truth; the alias is a mirror
        log.warning(
            "registry promoted %s, but the Milvus alias did not move: %s", release.label, exc
        )
    return release


def register_checkpoint(
    milvus: MilvusSettings,
    deployment: Deployment,
    checkpoint: Path,
    *,
    promote_it: bool = False,
    registry: Registry | None = None,
) -> tuple[ModelVersion, Release | None]:
    """Register a trained checkpoint (``aether train``); with ``promote_it``, promote it with the
    index serving now (a ranker scores candidates by id, so any index can feed it)."""
    registry = registry or Registry.for_deployment(deployment)
    loaded = load_checkpoint(checkpoint)
    entry = registry.register_model(checkpoint, loaded.model_version, loaded.metadata)
    if not promote_it:
        return entry, None
    current = registry.promoted()
    if current is None:
        raise ConfigError(
            f"model {entry.version} is registered, but nothing is promoted to pair it with: "
            "run `aether index` first"
        )
    return entry, promote(
        milvus, deployment, model=entry.version, index=current.index, registry=registry
    )


def _collect_garbage(
    index: ItemIndex, registry: Registry, deployment: Deployment
) -> tuple[str, ...]:
    manifest = registry.read()
    protected = {
        number
        # The serving pair and candidates; the previous pair survives by ``keep_versions`` (2).
        for version in registry.protected_indexes(keep_releases=1)
        if version in manifest.indexes
        and (number := index.version_of(manifest.indexes[version].collection)) is not None
    }
    dropped = index.garbage_collect(protected=protected)
    names = tuple(index_version_name(deployment, index.collection_name(n)) for n in dropped)
    registry.mark_dropped(names)
    if names:
        log.info("dropped index versions %s", ", ".join(names))
    return names
