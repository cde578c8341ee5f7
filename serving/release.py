"""What one serving release is: a ranker and an index version, loaded together, never mixed.

A ``ServingRelease`` is immutable and built off the request path (``serving.live_state``): the
ranker checkpoint, the index version's item vectors and content map, the user encoder that fits
them, and a searcher *pinned* to that version's Milvus collection (``retrieval.index.
PinnedCollection``), so a later alias switch cannot slip another version's candidates under
this release's model. Every response served with it says ``version_of(ranker)``:
``<model>@<index>`` for a registry release (``lifecycle.registry.Release.label``).

Three kinds:

* ``registry_release``: the promoted pair of ``lifecycle.registry``;
* ``file_release``: an embeddings file and a checkpoint given by hand (``aether serve
  --embeddings/--checkpoint``, the benchmarks, the demo), searched through the index alias;
* ``empty_release``: nothing indexed yet. Popular and fresh items over the catalogue the stream
  built, every response flagged as a fallback (``no_release``), until a pair is promoted.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import ConfigError, NotFoundError
from lifecycle.registry import NO_MODEL, Registry, Release
from ranker.scoring import Ranker, SASRecRanker
from retrieval.ann import VectorSearcher
from retrieval.build_retriever import DEFAULT_PLAN, choose_user_encoder
from retrieval.content import RidgeMap
from retrieval.embeddings import embeddings_model_version, load_embeddings
from retrieval.encoders import ItemEmbeddings
from retrieval.index import ItemIndex
from retrieval.sources import UserEncoder

log = logging.getLogger(__name__)

NO_RELEASE = "no_release"  # the fallback reason while nothing is promoted


@dataclass(frozen=True, eq=False)
class ServingRelease:
    ranker: Ranker | None
    searcher: VectorSearcher | None  # None: no index (the empty release)
    item_vectors: ItemEmbeddings | None
    encoder: UserEncoder | None
    plan: Mapping[str, tuple[int, float]]
    index_version: str | None = None  # registry releases: the index part of the label
    serial: int = 0  # the registry's release serial; 0 for file and empty releases
    content_map: RidgeMap | None = None  # text embeddings → this release's item space
    fallback_reasons: tuple[str, ...] = ()  # flagged on every response served with it

    def version_of(self, ranker: Ranker | None) -> str:
        """The ``model_version`` of a response ranked by ``ranker`` (this release's, or none for a
        retrieval-order arm) over this release's index."""
        model = ranker.model_version if ranker is not None else NO_MODEL
        return f"{model}@{self.index_version}" if self.index_version else model

    @property
    def label(self) -> str:
        return self.version_of(self.ranker)

    @property
    def ranker_encodes(self) -> bool:
        """Whether the user encoder is the ranker itself (its own item space)."""
        return self.ranker is not None and self.encoder is self.ranker


def empty_release() -> ServingRelease:
    return ServingRelease(
        ranker=None,
        searcher=None,
        item_vectors=None,
        encoder=None,
        plan=DEFAULT_PLAN,
        fallback_reasons=(NO_RELEASE,),
    )


def file_release(
    embeddings: Path, checkpoint: Path | None, searcher: VectorSearcher
) -> ServingRelease:
    """Vectors from ``embeddings`` (the ``retrieval.embeddings`` format), the ranker from
    ``checkpoint`` when it exists, ANN through ``searcher`` (the index alias)."""
    item_ids, matrix = load_embeddings(embeddings)
    vectors = ItemEmbeddings(item_ids, matrix)
    ranker = _ranker_from(checkpoint)
    encoder, plan = choose_user_encoder(vectors, embeddings_model_version(embeddings), ranker)
    return ServingRelease(ranker, searcher, vectors, encoder, plan)


def registry_release(registry: Registry, release: Release, index: ItemIndex) -> ServingRelease:
    """Load the promoted pair ``release``: its model, its index version's vectors and content
    map, and a searcher pinned to its collection (loaded in Milvus before it is returned)."""
    entry = registry.index(release.index)
    index.load(entry.collection)
    item_ids, matrix = load_embeddings(registry.path(entry.embeddings))
    vectors = ItemEmbeddings(item_ids, matrix)
    ranker = (
        SASRecRanker.from_checkpoint(registry.path(registry.model(release.model).path))
        if release.model is not None
        else None
    )
    encoder, plan = choose_user_encoder(vectors, entry.embedding_model_version, ranker)
    content_map = None
    if entry.content_map is not None:
        with np.load(registry.path(entry.content_map), allow_pickle=False) as data:
            content_map = RidgeMap.from_weights(data["weights"])
    return ServingRelease(
        ranker=ranker,
        searcher=index.pinned(entry.collection),
        item_vectors=vectors,
        encoder=encoder,
        plan=plan,
        index_version=release.index,
        serial=release.serial,
        content_map=content_map,
    )


def arm_rankers(registry: Registry, versions: Iterable[str]) -> dict[str, SASRecRanker]:
    """The registered models that experiment arms rank with (``sasrec@<version>``), loaded once
    when the server starts, each a model in memory beside the release's."""
    loaded: dict[str, SASRecRanker] = {}
    for version in sorted(set(versions)):
        try:
            entry = registry.model(version)
        except NotFoundError as exc:
            raise ConfigError(
                f"an experiment arm ranks with {version!r}, which is not registered: {exc}. "
                "Register it (`aether train` registers what it trains) or change the experiments file."
            ) from exc
        loaded[version] = SASRecRanker.from_checkpoint(registry.path(entry.path))
    return loaded


def _ranker_from(checkpoint: Path | None) -> SASRecRanker | None:
    if checkpoint is None or not checkpoint.is_file():
        log.info("no ranker checkpoint at %s: serving retrieval order", checkpoint)
        return None
    return SASRecRanker.from_checkpoint(checkpoint)
