"""The composition root wires every source into one retriever (fake index, in-memory store)."""

import numpy as np

from features.transition_store import InMemoryTransitionStore
from retrieval.build_retriever import build_retriever
from retrieval.catalog import ItemCatalog, ItemMeta
from retrieval.encoders import ItemEmbeddings, MeanHistoryEncoder
from retrieval.sources import Exclusions, RetrievalRequest
from streams.transitions import increments_from_sequence


class ExactIndex:
    """Brute-force stand-in for ``ItemIndex.search`` (the project's own interface)."""

    def __init__(self, embeddings: ItemEmbeddings) -> None:
        self.embeddings = embeddings

    def search(self, vectors, k, *, filters=None, excluded=frozenset()):
        scores = self.embeddings.matrix @ vectors[0]
        order = [self.embeddings.item_ids[j] for j in np.argsort(-scores)]
        return [
            [(i, float(scores[self.embeddings.rows([i])[0]])) for i in order if i not in excluded][
                :k
            ]
        ]


def test_build_retriever_uses_every_source_and_the_fallback() -> None:
    ids = [f"i{j}" for j in range(30)]
    embeddings = ItemEmbeddings(
        ids, np.random.default_rng(0).standard_normal((30, 4)).astype(np.float32)
    )
    catalog = ItemCatalog(ItemMeta(i, created_time_ms=j) for j, i in enumerate(ids))
    transitions = InMemoryTransitionStore()
    transitions.apply(increments_from_sequence(["i1", "i2", "i3"]))
    retriever = build_retriever(
        index=ExactIndex(embeddings),
        encoder=MeanHistoryEncoder(embeddings),
        catalog=catalog,
        transitions=transitions,
        popularity={"i7": 5.0},
        fresh_window_ms=3,
    )
    assert [p.source.name for p in retriever.plans] == ["ann", "cooccurrence", "popular", "fresh"]
    result = retriever.retrieve(
        RetrievalRequest(
            k=10, history=("i1", "i2"), exclusions=Exclusions(seen=frozenset({"i1", "i2"}))
        )
    )
    ids_out = [c.item_id for c in result.candidates]
    assert len(ids_out) == 10 and "i3" in ids_out and "i7" in ids_out and "i29" in ids_out
    cold_user = retriever.retrieve(RetrievalRequest(k=5))
    assert len(cold_user.candidates) == 5  # no history: popular and fresh still answer
