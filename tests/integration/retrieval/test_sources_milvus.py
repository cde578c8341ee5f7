"""ANN source and the full retriever over Milvus (Lite and a server), plus MiniLM content embeddings."""

import numpy as np
import pytest

from features.transition_store import InMemoryTransitionStore
from retrieval.ann import AnnSource
from retrieval.catalog import ItemCatalog, ItemMeta
from retrieval.content import MiniLMTextEncoder, fit_content_source
from retrieval.cooccurrence import CooccurrenceSource
from retrieval.encoders import ItemEmbeddings, MeanHistoryEncoder
from retrieval.index import ItemIndex, ItemRows
from retrieval.merge import CandidateRetriever, SourcePlan
from retrieval.popular import FreshSource, PopularSource
from retrieval.sources import CandidateFilters, Exclusions, RetrievalRequest
from streams.transitions import increments_from_sequence

pytestmark = pytest.mark.integration


@pytest.fixture
def items():
    """120 items: embeddings and a catalogue (every third a drama, m5 unavailable)."""
    rng = np.random.default_rng(7)
    ids = [f"m{j}" for j in range(120)]
    vectors = rng.standard_normal((120, 16)).astype(np.float32)
    catalog = ItemCatalog(
        ItemMeta(
            i, f"Movie {j}", ("Drama",) if j % 3 == 0 else ("Comedy",), j != 5, created_time_ms=j
        )
        for j, i in enumerate(ids)
    )
    return ItemEmbeddings(ids, vectors), catalog


@pytest.fixture
def world(items, milvus_backend_uri, alias_prefix):
    """The items published into Milvus (each backend in turn)."""
    embeddings, catalog = items
    ids, vectors = embeddings.item_ids, embeddings.matrix
    with ItemIndex(milvus_backend_uri, alias=f"{alias_prefix}_items") as index:
        index.publish(
            ItemRows(
                ids,
                vectors,
                categories=[catalog[i].categories for i in ids],
                available=[catalog[i].available for i in ids],
            ),
            progress=False,
        )
        yield index, embeddings, catalog


def test_ann_source_uses_the_encoder_and_pushes_filters(world) -> None:
    index, embeddings, _ = world
    source = AnnSource(index, MeanHistoryEncoder(embeddings, last_n=3))
    history = ("m1", "m2", "m3")
    request = RetrievalRequest(
        k=10,
        history=history,
        exclusions=Exclusions(seen=frozenset(history)),
        filters=CandidateFilters(categories=frozenset({"Drama"})),
    )
    found = source.candidates(request)
    assert len(found) == 10 and all(c.source == "ann" for c in found)
    assert all(int(c.item_id[1:]) % 3 == 0 and c.item_id != "m5" for c in found)
    user = embeddings.matrix[[1, 2, 3]].mean(axis=0)
    drama = [j for j in range(120) if j % 3 == 0 and j not in (1, 2, 3)]
    best = max(drama, key=lambda j: float(embeddings.matrix[j] @ user))
    assert found[0].item_id == f"m{best}"
    assert source.candidates(RetrievalRequest(k=5, history=("unknown",))) == []


def test_retriever_merges_all_sources_and_survives_a_dropped_index(world) -> None:
    index, embeddings, catalog = world
    transitions = InMemoryTransitionStore()
    transitions.apply(increments_from_sequence(["m1", "m2", "m9", "m10"]))
    encoder = MeanHistoryEncoder(embeddings)
    retriever = CandidateRetriever(
        [
            SourcePlan(AnnSource(index, encoder), reserved=20),
            SourcePlan(CooccurrenceSource(transitions, catalog=catalog), reserved=20, weight=2.0),
            SourcePlan(PopularSource({"m20": 3.0, "m21": 2.0}, catalog), reserved=20),
            SourcePlan(FreshSource(catalog, window_ms=10), reserved=20),
        ],
        catalog=catalog,
        fallback=PopularSource({}, catalog),
    )
    request = RetrievalRequest(
        k=20, history=("m1", "m2"), exclusions=Exclusions(seen=frozenset({"m1", "m2"}))
    )
    result = retriever.retrieve(request)
    ids = [c.item_id for c in result.candidates]
    assert len(ids) == 20 == len(set(ids))
    assert {"ann", "cooccurrence", "popular", "fresh"} <= {c.source for c in result.candidates}
    assert "m9" in ids and not {"m1", "m2", "m5"} & set(ids)
    # The index disappears (Milvus down or dropped): the slate is still full, from other sources.
    index.garbage_collect(keep=0)
    index._client.drop_collection(index.active_collection)
    degraded = retriever.retrieve(request)
    assert degraded.failed_sources == ("ann",) and len(degraded.candidates) == 20


def test_content_source_maps_minilm_text_into_the_item_space(items) -> None:
    embeddings, catalog = items  # no Milvus here: content vectors live in the source itself
    cold = ItemMeta("cold1", "Movie 0 sequel", ("Drama",))
    catalog.upsert(cold)
    source, _ = fit_content_source(
        catalog,
        embeddings.item_ids,
        embeddings.matrix,
        ["cold1"],
        MeanHistoryEncoder(embeddings),
        MiniLMTextEncoder(),
    )
    assert source.vectors.shape == (1, 16)
    found = source.candidates(RetrievalRequest(k=5, history=("m0",)))
    assert [c.item_id for c in found] == ["cold1"] and found[0].source == "content"
