"""The co-occurrence source reads neighbours from a transition store (in memory here)."""

from features.transition_store import InMemoryTransitionStore
from retrieval.catalog import ItemCatalog, ItemMeta
from retrieval.cooccurrence import CooccurrenceSource
from retrieval.sources import CandidateFilters, Exclusions, RetrievalRequest
from streams.transitions import increments_from_sequence


def _store() -> InMemoryTransitionStore:
    store = InMemoryTransitionStore()
    store.apply(increments_from_sequence(["a", "b", "c", "d"], window=1))
    store.apply(increments_from_sequence(["a", "b", "e"], window=1))
    return store


def test_source_proposes_successors_of_recent_items_and_respects_exclusions() -> None:
    source = CooccurrenceSource(_store(), anchors=1)
    found = source.candidates(RetrievalRequest(k=5, history=("x", "b")))
    assert [c.item_id for c in found] == ["c", "e"]
    assert all(c.source == "cooccurrence" for c in found)
    excluded = source.candidates(
        RetrievalRequest(k=5, history=("b",), exclusions=Exclusions(dismissed=frozenset({"c"})))
    )
    assert [c.item_id for c in excluded] == ["e"]


def test_source_applies_catalog_filters_and_handles_empty_history() -> None:
    catalog = ItemCatalog([ItemMeta("c", categories=("Drama",)), ItemMeta("e", available=False)])
    source = CooccurrenceSource(_store(), anchors=1, catalog=catalog)
    found = source.candidates(RetrievalRequest(k=5, history=("b",), filters=CandidateFilters()))
    assert [c.item_id for c in found] == ["c"]
    assert source.candidates(RetrievalRequest(k=5)) == []
