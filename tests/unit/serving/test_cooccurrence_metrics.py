"""Serving counts the co-occurrence anchors it kept and those it read again
(``serving.server_metrics.CountedTransitions``, ``aether_recommend_cooccurrence_anchors_total``)."""

from features.transition_store import InMemoryTransitionStore
from retrieval.catalog import ItemCatalog, ItemMeta
from retrieval.cooccurrence import CooccurrenceSource
from retrieval.sources import RetrievalRequest
from streams.transitions import increments_from_sequence


def test_serving_counts_the_anchors_it_kept_and_the_anchors_it_read() -> None:
    from prometheus_client import REGISTRY

    from retrieval.catalog_index import CatalogIndex
    from serving.server_metrics import CountedTransitions

    def count(outcome: str) -> float:
        labels = {"outcome": outcome}
        return (
            REGISTRY.get_sample_value("aether_recommend_cooccurrence_anchors_total", labels) or 0.0
        )

    store = InMemoryTransitionStore()
    store.apply(increments_from_sequence(["a", "b", "c", "d"], window=1))
    source = CooccurrenceSource(CountedTransitions(store), anchors=2)
    index = CatalogIndex(ItemCatalog(ItemMeta(i) for i in "abcdefg"))
    request = RetrievalRequest(k=5, history=("a", "b"))
    kept, read = count("kept"), count("read")
    for _ in range(3):
        source.ranked_indices(request, index.eligible(request))
    store.apply({("b", "f"): 5.0})
    source.ranked_indices(request, index.eligible(request))
    assert (count("kept") - kept, count("read") - read) == (5, 3)  # 2 first, then 2+2, then 1+1
