"""The serving path of retrieval (catalogue rows) answers what the object path answered.

``CandidateRetriever`` works on row arrays since issue 19; ``reference_retrieval`` is the object
path it replaced. Both run here on the same 600 requests over one catalogue with every source
(ANN, co-occurrence, popular, fresh, content) and the fallback, with random histories, dismissals,
request exclusions, category and availability filters, seen sets and candidate counts; ties are
common on purpose (integer counts, repeated popularity values). Candidates must be equal: item,
fused score (to the bit), source and every proposer, in order.
"""

from __future__ import annotations

import collections
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference_retrieval import reference_retrieve

from features.transition_store import InMemoryTransitionStore
from retrieval.ann import AnnSource
from retrieval.catalog import ItemCatalog, ItemMeta
from retrieval.catalog_index import CatalogIndex
from retrieval.content import ContentSource
from retrieval.cooccurrence import CooccurrenceSource
from retrieval.merge import CandidateRetriever, SourcePlan, fuse_rows, merge_candidates
from retrieval.popular import FreshSource, PopularSource
from retrieval.sources import (
    Candidate,
    CandidateFilters,
    Exclusions,
    RetrievalRequest,
)

CATEGORIES = ("action", "drama", "comedy", "kids", "noir")
DAY_MS = 24 * 3600 * 1000


class ExactSearch:
    """Brute-force inner-product search with Milvus' contract (filters and exclusions applied)."""

    def __init__(self, item_ids: list[str], matrix: np.ndarray, catalog: ItemCatalog) -> None:
        self.item_ids, self.matrix, self.catalog = item_ids, matrix, catalog

    def search(self, vectors, k, *, filters=None, excluded=frozenset()):
        scores = self.matrix @ vectors[0]
        hits = []
        for row in np.argsort(-scores, kind="stable"):
            item = self.item_ids[row]
            if item in excluded or (filters and not self.catalog.passes(item, filters)):
                continue
            hits.append((item, float(scores[row])))
            if len(hits) == k:
                break
        return [hits]


class FirstItemsEncoder:
    def __init__(self, vectors: dict[str, np.ndarray]) -> None:
        self.vectors = vectors

    def encode_user(self, history):
        known = [self.vectors[i] for i in history[-5:] if i in self.vectors]
        return np.mean(known, axis=0) if known else None


def world(seed: int = 7):
    rng = np.random.default_rng(seed)
    ids = [f"m{n}" for n in range(400)]
    catalog = ItemCatalog(
        ItemMeta(
            item,
            title=item,
            categories=tuple(rng.choice(CATEGORIES, size=rng.integers(0, 3), replace=False)),
            available=bool(rng.random() > 0.1),
            created_time_ms=int(rng.integers(0, 90)) * DAY_MS,
        )
        for item in ids
    )
    indexed = ids[:360]  # the rest are new items: only the content source proposes them
    matrix = rng.normal(size=(len(indexed), 8)).astype(np.float32)
    vectors = dict(zip(indexed, matrix, strict=True))
    encoder = FirstItemsEncoder(vectors)
    transitions = InMemoryTransitionStore()
    for _ in range(300):  # sessions: integer counts, so equal probabilities (ties) abound
        session = rng.choice(ids, size=rng.integers(2, 12))
        transitions.apply({(a, b): 1.0 for a, b in itertools.pairwise(session) if a != b})
    popularity = {i: float(rng.integers(0, 6)) for i in ids[:300]}  # many equal, some missing
    popular = PopularSource(popularity, catalog)
    plans = [
        SourcePlan(AnnSource(ExactSearch(indexed, matrix, catalog), encoder), 10, 2.0),
        SourcePlan(CooccurrenceSource(transitions, catalog=catalog, per_anchor=20), 50, 1.0),
        SourcePlan(popular, 5, 0.5),
        SourcePlan(FreshSource(catalog, window_ms=20 * DAY_MS), 3, 0.3),
        SourcePlan(
            ContentSource(ids[360:], rng.normal(size=(40, 8)).astype(np.float32), encoder, catalog),
            3,
            0.3,
        ),
    ]
    return ids, catalog, plans, popular


def requests(ids: list[str], count: int, seed: int = 11):
    rng = np.random.default_rng(seed)
    for n in range(count):
        history = tuple(rng.choice(ids, size=rng.integers(0, 30)))
        seen = frozenset(rng.choice(ids, size=rng.integers(0, 400)))
        wanted = frozenset(rng.choice(CATEGORIES, size=rng.integers(0, 2), replace=False))
        unwanted = frozenset(rng.choice(CATEGORIES, size=rng.integers(0, 2), replace=False))
        yield RetrievalRequest(
            k=int(rng.choice([5, 20, 60, 200])),
            history=history,
            exclusions=Exclusions(
                seen=frozenset(history),
                dismissed=frozenset(rng.choice(ids, size=rng.integers(0, 5))),
                request=frozenset(rng.choice(ids, size=rng.integers(0, 5))),
            ),
            filters=CandidateFilters(
                categories=wanted - unwanted,
                excluded_categories=unwanted,
                available_only=bool(n % 7),
            ),
            as_of_ms=int(rng.integers(0, 100)) * DAY_MS,
            user_id=f"u{n}",
            seen_among=None if n % 5 == 0 else (lambda items, s=seen: s & frozenset(items)),
            # read whole (1, 2), too large to read whole (3), or not offered (0, 4)
            seen_whole={1: lambda s=seen: s, 2: lambda s=seen: s, 3: lambda: None}.get(n % 5),
        )


def test_600_requests_get_the_same_candidates_on_rows_as_on_objects():
    ids, catalog, plans, popular = world()
    retriever = CandidateRetriever(plans, catalog=catalog, fallback=popular)
    fallbacks = 0
    for request in requests(ids, 600):
        rows = retriever.retrieve(request)
        objects = reference_retrieve(plans, catalog, popular, request)
        assert rows.candidates == objects, request
        assert described_by_arrays(rows.merged) == described_by_objects(objects), request
        fallbacks += rows.used_fallback
    assert fallbacks > 20  # the fallback path was exercised, not only the merge


def test_a_source_without_rows_is_read_through_its_candidates():
    ids, catalog, plans, popular = world()

    class ObjectsOnly:
        name = "listed"

        def candidates(self, request):
            return [Candidate(i, 1.0, self.name) for i in ids[::-7][: request.k]]

    mixed = [*plans, SourcePlan(ObjectsOnly(), 5, 1.0)]
    retriever = CandidateRetriever(mixed, catalog=catalog, fallback=popular)
    for request in requests(ids, 60, seed=3):
        result = retriever.retrieve(request)
        objects = reference_retrieve(mixed, catalog, popular, request)
        assert result.candidates == objects
        assert described_by_arrays(result.merged) == described_by_objects(objects)


def described_by_arrays(merged):
    """What serving reads of the merged candidates (``MergedRows``), one tuple per item."""
    proposers = [
        frozenset(name for name, hit in zip(merged.names, row, strict=True) if hit)
        for row in merged.proposed.tolist()
    ]
    described = list(
        zip(merged.item_ids(), merged.scores.tolist(), merged.sources(), proposers, strict=True)
    )
    counts = collections.Counter(merged.sources())
    assert merged.by_source() == counts and len(merged) == len(described)
    return described


def described_by_objects(candidates):
    return [(c.item_id, c.score, c.source, frozenset(c.sources)) for c in candidates]


ITEMS = [f"i{n}" for n in range(12)]


@settings(max_examples=300, deadline=None)
@given(
    lists=st.lists(st.lists(st.sampled_from(ITEMS), max_size=10), min_size=1, max_size=4),
    data=st.data(),
    k=st.integers(1, 12),
)
def test_fuse_rows_equals_merge_candidates(lists, data, k):
    names = [f"s{n}" for n in range(len(lists))][::-1]  # names out of order: ties by name
    reserved = data.draw(st.lists(st.integers(0, 4), min_size=len(lists), max_size=len(lists)))
    weights = data.draw(
        st.lists(st.sampled_from([0.3, 0.5, 1.0, 2.0]), min_size=len(lists), max_size=len(lists))
    )
    ineligible = data.draw(st.sets(st.sampled_from(ITEMS)))
    catalog = ItemCatalog(ItemMeta(i) for i in reversed(ITEMS))  # rows not in id order
    index = CatalogIndex(catalog)
    mask = np.array([i not in ineligible for i in index.ids])
    expected = merge_candidates(
        [(n, [Candidate(i, 0.0, n) for i in items]) for n, items in zip(names, lists, strict=True)],
        reserved,
        k,
        lambda item: item not in ineligible,
        weights,
    )
    fused = fuse_rows(
        [index.rows(items) for items in lists], reserved, k, mask, weights, index.id_rank
    )
    assert fused.candidates(index.ids, names) == expected


def test_a_fallback_needs_the_catalogue():
    _, _, plans, popular = world()
    with pytest.raises(ValueError, match="catalogue"):
        CandidateRetriever(plans, fallback=popular)
