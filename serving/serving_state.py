"""The one immutable object a request is served with: a release plus the catalogue around it.

``ServingState`` bundles everything version-dependent — the release (ranker, index version,
encoder), the retriever built over that release's index and the current catalogue, the item
vectors MMR and explanations use, the scorer — so that the pipeline reads one reference at the
start of a request and uses nothing else: a swap (new release, refreshed catalogue) replaces the
reference between two requests' reads and can never mix two versions inside one response.

Built off the request path, in two steps so the costly part is redone only when it changes:

* ``release_view(release, new_items)``: the release with the new items (content rows the
  release's index lacks) mapped into its item space by its content map; item vectors, the slate
  explainer and the vector scorer over indexed + new items. Redone when the release or the set of
  new items changes.
* ``assemble(view, snapshot, wiring)``: the candidate sources over the catalogue snapshot
  (``serving.catalog_view``). Redone on every catalogue refresh.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from core.per_snapshot import PerSnapshot
from features.transition_store import TransitionStore
from ranker.scoring import Ranker
from retrieval.build_retriever import DEFAULT_PLAN, build_retriever
from retrieval.catalog import ItemCatalog
from retrieval.catalog_index import CatalogIndex
from retrieval.content import ContentSource
from retrieval.merge import CandidateRetriever
from retrieval.sources import CandidateSource, UserEncoder
from serving.catalog_view import CatalogSnapshot
from serving.explain import SlateExplainer
from serving.release import ServingRelease
from serving.rerank import UnitVectors, unit_vectors
from serving.user_vector import EmbeddingRanker, VectorScorer


@dataclass(frozen=True)
class RetrievalState:
    """What the pipeline retrieves with; replaced as a whole when the catalogue is refreshed."""

    retriever: CandidateRetriever
    catalog: ItemCatalog  # in-process item metadata: titles for explanations, filters
    as_of_ms: int | None = None  # event-time "now" of the catalogue (None: the serving clock)


@dataclass(frozen=True, eq=False)
class ReleaseView:
    """A release and the new items it can place in its item space."""

    release: ServingRelease
    new_item_ids: tuple[str, ...] = ()  # content items the index lacks, mapped below
    new_item_vectors: np.ndarray | None = None  # (len(new_item_ids), dim), in the item space
    item_vectors: Mapping[str, np.ndarray] | None = None  # indexed + new: MMR, explanations
    explainer: SlateExplainer = field(default_factory=lambda: SlateExplainer(None))
    vector_scorer: VectorScorer | None = None
    # MMR's unit vectors of a catalogue snapshot's rows (``serving.rerank.unit_vectors`` of its
    # ids; None when no item has a vector), built on the snapshot's first diversified request.
    # Not an init field, so ``replace`` gives a new view a cache of its own.
    row_vectors: PerSnapshot[CatalogIndex, UnitVectors | None] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        vectors = self.item_vectors
        object.__setattr__(
            self,
            "row_vectors",
            PerSnapshot(lambda index: unit_vectors(index.ids, vectors) if vectors else None),
        )


def release_view(
    release: ServingRelease, new_item_text: Mapping[str, np.ndarray] | None = None
) -> ReleaseView:
    """``release`` with the new items whose text embeddings are ``new_item_text`` (items of the
    release's index are left out: they have their own vectors)."""
    indexed = release.item_vectors
    vectors: dict[str, np.ndarray] = {}
    if indexed is not None:
        vectors = {item: indexed.matrix[row] for row, item in enumerate(indexed.item_ids)}
    new_ids: tuple[str, ...] = ()
    mapped = None
    if release.content_map is not None and new_item_text:
        new_ids = tuple(i for i in sorted(new_item_text) if indexed is None or i not in indexed)
        if new_ids:
            text = np.stack([np.asarray(new_item_text[i], dtype=np.float32) for i in new_ids])
            mapped = release.content_map.predict(text)
            vectors.update(zip(new_ids, mapped, strict=True))
    scorer = None
    if release.ranker_encodes and isinstance(release.ranker, EmbeddingRanker):
        extra = dict(zip(new_ids, mapped, strict=True)) if mapped is not None else None
        scorer = VectorScorer(release.ranker, extra)
    return ReleaseView(
        release=release,
        new_item_ids=new_ids,
        new_item_vectors=mapped,
        item_vectors=vectors or None,
        explainer=SlateExplainer(vectors or None),
        vector_scorer=scorer,
    )


@dataclass(frozen=True)
class RetrievalWiring:
    """The release-independent parts of retrieval: the stream-fed transitions, the guard put
    around I/O sources (circuit breakers), the executor sources run on."""

    transitions: TransitionStore
    guard: Callable[[CandidateSource], CandidateSource] | None = None
    executor: Executor | None = None


@dataclass(frozen=True, eq=False)
class ServingState:
    view: ReleaseView
    retrieval: RetrievalState

    @property
    def release(self) -> ServingRelease:
        return self.view.release


def assemble(view: ReleaseView, snapshot: CatalogSnapshot, wiring: RetrievalWiring) -> ServingState:
    """The state serving ``view`` over the catalogue ``snapshot``."""
    release = view.release
    content = None
    if view.new_item_vectors is not None and release.encoder is not None:
        known = [n for n, item in enumerate(view.new_item_ids) if item in snapshot.catalog]
        if known:
            content = ContentSource(
                [view.new_item_ids[n] for n in known],
                view.new_item_vectors[known],
                release.encoder,
                snapshot.catalog,
            )
    retriever = build_retriever(
        index=release.searcher,
        encoder=release.encoder,
        plan=release.plan,
        catalog=snapshot.catalog,
        transitions=wiring.transitions,
        popularity=snapshot.popularity,
        content=content,
        guard=wiring.guard,
        executor=wiring.executor,
    )
    return ServingState(
        view, RetrievalState(retriever, snapshot.catalog, snapshot.as_of_ms or None)
    )


def state_from_parts(
    retrieval: RetrievalState,
    ranker: Ranker | None,
    item_vectors: Mapping[str, np.ndarray] | None,
    user_encoder: UserEncoder | None,
) -> ServingState:
    """A state for a release given by hand (no index version: ``model_version`` is the
    ranker's). When the ranker is the user encoder, its vector also gives its scores."""
    release = ServingRelease(
        ranker=ranker, searcher=None, item_vectors=None, encoder=user_encoder, plan=DEFAULT_PLAN
    )
    scorer = (
        VectorScorer(ranker)
        if ranker is not None and ranker is user_encoder and isinstance(ranker, EmbeddingRanker)
        else None
    )
    view = ReleaseView(
        release=release,
        item_vectors=item_vectors,
        explainer=SlateExplainer(item_vectors),  # unit vectors, once per state
        vector_scorer=scorer,
    )
    return ServingState(view, retrieval)
