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


class _CountingStore:
    """The in-memory store, counting the anchors whose neighbours it answered in full."""

    def __init__(self, store: InMemoryTransitionStore) -> None:
        self.store, self.parsed = store, 0

    def neighbours(self, anchors, n):
        return self.store.neighbours(anchors, n)

    def changed_neighbours(self, anchors, n, held):
        answers = self.store.changed_neighbours(anchors, n, held)
        self.parsed += sum(answer.arrays is not None for answer in answers)
        return answers


def test_serving_path_reads_again_only_anchors_written_since() -> None:
    from retrieval.catalog_index import CatalogIndex

    store = _store()
    counting = _CountingStore(store)
    source = CooccurrenceSource(counting, anchors=2)  # type: ignore[arg-type]
    catalog = ItemCatalog(ItemMeta(i) for i in "abcdefg")
    index = CatalogIndex(catalog)
    request = RetrievalRequest(k=5, history=("a", "b"))

    def rows(index: CatalogIndex = index) -> list[str]:
        found = index.item_ids(source.ranked_indices(request, index.eligible(request)))
        assert found == [c.item_id for c in source.candidates(request)]  # the object path
        return found

    assert rows() == ["b", "c", "e"] and counting.parsed == 2
    assert rows() == ["b", "c", "e"] and counting.parsed == 2  # both kept: nothing parsed
    store.apply({("b", "f"): 5.0})  # "b" changed, "a" did not
    assert rows() == ["f", "b", "c", "e"] and counting.parsed == 3
    other = CatalogIndex(ItemCatalog(ItemMeta(i) for i in "fedcba"))  # a new snapshot: afresh
    assert rows(other) == ["f", "b", "c", "e"] and counting.parsed == 5
