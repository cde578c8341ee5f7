"""Merging: quotas, de-duplication, exact filters, redistribution and the never-empty fallback."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retrieval.catalog import ItemCatalog, ItemMeta
from retrieval.merge import CandidateRetriever, SourcePlan, merge_candidates
from retrieval.popular import PopularSource
from retrieval.sources import Candidate, CandidateFilters, Exclusions, RetrievalRequest


def _list(name: str, ids: str) -> tuple[str, list[Candidate]]:
    return name, [Candidate(i, 1.0 / (r + 1), name) for r, i in enumerate(ids.split())]


class FixedSource:
    def __init__(self, name: str, ids: str) -> None:
        self.name = name
        self._ids = ids.split()
        self.asked_k: list[int] = []

    def candidates(self, request: RetrievalRequest) -> list[Candidate]:
        self.asked_k.append(request.k)
        kept = [i for i in self._ids if i not in request.exclusions]
        return [Candidate(i, 1.0, self.name) for i in kept[: request.k]]


class BrokenSource:
    name = "broken"

    def candidates(self, request: RetrievalRequest) -> list[Candidate]:
        raise RuntimeError("milvus is down")


def test_items_proposed_by_several_sources_rise_in_the_fusion() -> None:
    merged = merge_candidates([_list("a", "a1 x a2"), _list("b", "b1 x b2")], [0, 0], k=3)
    assert merged[0].item_id == "x"
    assert merged[0].sources in {("a", "b"), ("b", "a")}
    assert merged[0].score == pytest.approx(2 / 61)


def test_duplicates_keep_the_largest_contributor_and_all_proposers() -> None:
    merged = merge_candidates([_list("a", "a1 a2 x"), _list("b", "x")], [0, 0], k=5)
    x = next(c for c in merged if c.item_id == "x")
    assert x.source == "b" and x.sources == ("b", "a")
    assert len(merged) == len({c.item_id for c in merged}) == 3


def test_weights_decide_between_sources() -> None:
    lists = [_list("a", "a1"), _list("b", "b1")]
    assert merge_candidates(lists, [0, 0], k=1, weights=[1.0, 2.0])[0].item_id == "b1"
    assert merge_candidates(lists, [0, 0], k=1, weights=[2.0, 1.0])[0].item_id == "a1"


def test_reserved_slots_guarantee_exposure_to_weak_sources() -> None:
    lists = [_list("strong", "s1 s2 s3 s4"), _list("fresh", "f1 f2")]
    without = merge_candidates(lists, [0, 0], k=3, weights=[5.0, 0.1])
    assert {c.item_id for c in without} == {"s1", "s2", "s3"}
    with_reserved = merge_candidates(lists, [0, 1], k=3, weights=[5.0, 0.1])
    assert {c.item_id for c in with_reserved} == {"s1", "s2", "f1"}


def test_ineligible_items_are_dropped_and_do_not_take_a_rank() -> None:
    merged = merge_candidates(
        [_list("a", "bad a1"), _list("b", "b1")],
        [0, 0],
        k=3,
        is_eligible=lambda item: item != "bad",
    )
    assert [c.item_id for c in merged] == ["a1", "b1"]
    assert merged[0].score == merged[1].score == pytest.approx(1 / 60)


def test_one_reserved_count_per_list_is_required() -> None:
    with pytest.raises(ValueError):
        merge_candidates([_list("a", "a1")], [1, 2], k=1)


def _catalog() -> ItemCatalog:
    return ItemCatalog(
        [
            ItemMeta("d1", categories=("Drama",)),
            ItemMeta("d2", categories=("Drama",)),
            ItemMeta("c1", categories=("Comedy",)),
            ItemMeta("gone", categories=("Drama",), available=False),
        ]
    )


def test_retriever_applies_exclusions_and_filters_exactly() -> None:
    retriever = CandidateRetriever(
        [SourcePlan(FixedSource("a", "gone d1 c1 d2"))], catalog=_catalog()
    )
    request = RetrievalRequest(
        k=4,
        filters=CandidateFilters(categories=frozenset({"Drama"})),
        exclusions=Exclusions(seen=frozenset({"d2"})),
    )
    result = retriever.retrieve(request)
    assert [c.item_id for c in result.candidates] == ["d1"]


def test_retriever_never_returns_empty_while_eligible_items_remain() -> None:
    catalog = _catalog()
    retriever = CandidateRetriever(
        [SourcePlan(BrokenSource()), SourcePlan(FixedSource("a", ""))],
        catalog=catalog,
        fallback=PopularSource({"c1": 3.0}, catalog),
    )
    result = retriever.retrieve(
        RetrievalRequest(k=2, exclusions=Exclusions(request=frozenset({"c1"})))
    )
    assert [c.item_id for c in result.candidates] == ["d1", "d2"]
    assert result.used_fallback and result.failed_sources == ("broken",)


def test_seen_items_are_dropped_before_the_merge_and_the_fallback_fills_their_slots() -> None:
    catalog = ItemCatalog([ItemMeta(i) for i in ("a1", "a2", "b1", "c1", "d1", "d2")])
    seen = frozenset({"a1", "c1", "d1"})
    asked: list[list[str]] = []

    def seen_among(item_ids):
        asked.append(list(item_ids))
        return seen & frozenset(item_ids)

    retriever = CandidateRetriever(
        [SourcePlan(FixedSource("a", "a1 a2 b1"))],
        catalog=catalog,
        fallback=PopularSource({"c1": 3.0, "d1": 2.0, "d2": 1.0}, catalog),
    )
    result = retriever.retrieve(RetrievalRequest(k=3, seen_among=seen_among))
    # a1 was seen; the fallback's c1 and d1 too: asked again, it fills the third slot with d2
    assert [c.item_id for c in result.candidates] == ["a2", "b1", "d2"]
    assert asked[0] == ["a1", "a2", "b1"]  # one lookup over the sources' candidates
    assert asked[1:] == [["c1"], ["d1"], ["d2"]] and result.used_fallback  # one per fallback round


def test_retriever_is_empty_only_when_nothing_is_eligible() -> None:
    catalog = _catalog()
    retriever = CandidateRetriever([], catalog=catalog, fallback=PopularSource({}, catalog))
    nothing = Exclusions(seen=frozenset(catalog))
    assert retriever.retrieve(RetrievalRequest(k=3, exclusions=nothing)).candidates == []


def test_retriever_asks_every_source_for_k_and_scales_reserved_slots() -> None:
    a, b = FixedSource("a", "a1 a2 a3 a4 a5 a6"), FixedSource("b", "b1 b2 b3 b4 b5 b6")
    retriever = CandidateRetriever(
        [SourcePlan(a, reserved=0, weight=10.0), SourcePlan(b, reserved=100, weight=1.0)],
        reference_k=200,
    )
    result = retriever.retrieve(
        RetrievalRequest(k=4, filters=CandidateFilters(available_only=False))
    )
    assert a.asked_k == [4] and b.asked_k == [4]
    # b keeps round(100 * 4 / 200) = 2 reserved slots; a wins the rest on weight.
    assert [c.item_id for c in result.candidates] == ["a1", "a2", "b1", "b2"]
    assert not result.used_fallback


def _reference_merge(lists, reserved, k, is_eligible, weights, rrf_c=60.0):
    """The merge rules written the plain way (the implementation before it was optimised)."""
    contributions: dict[str, dict[str, float]] = {}
    eligible_lists = []
    for (name, candidates), weight in zip(lists, weights, strict=True):
        ranked: list[str] = []
        for candidate in candidates:
            item = candidate.item_id
            if (item in contributions and name in contributions[item]) or not is_eligible(item):
                continue
            contributions.setdefault(item, {})[name] = weight / (rrf_c + len(ranked))
            ranked.append(item)
        eligible_lists.append(ranked)
    fused = {item: sum(parts.values()) for item, parts in contributions.items()}
    chosen: set[str] = set()
    for ranked, quota in zip(eligible_lists, reserved, strict=True):
        placed = 0
        for item in ranked:
            if placed >= quota or len(chosen) >= k:
                break
            if item not in chosen:
                chosen.add(item)
                placed += 1
    for item in sorted(fused, key=lambda i: (-fused[i], i)):
        if len(chosen) >= k:
            break
        chosen.add(item)
    result = []
    for item in sorted(chosen, key=lambda i: (-fused[i], i)):
        names = tuple(
            n for n, _ in sorted(contributions[item].items(), key=lambda kv: (-kv[1], kv[0]))
        )
        result.append(Candidate(item, fused[item], names[0], names))
    return result


proposal_lists = st.lists(
    st.lists(st.sampled_from([f"i{n}" for n in range(25)]), max_size=20), min_size=1, max_size=4
)


@settings(max_examples=200, deadline=None)
@given(
    proposal_lists,
    st.data(),
    st.integers(1, 30),
    st.frozensets(st.sampled_from([f"i{n}" for n in range(25)])),
)
def test_merge_equals_the_plain_reference(ids, data, k, ineligible) -> None:
    names = data.draw(st.lists(st.sampled_from("abc"), min_size=len(ids), max_size=len(ids)))
    lists = [
        (name, [Candidate(i, 1.0, name) for i in items])
        for name, items in zip(names, ids, strict=True)
    ]
    reserved = data.draw(st.lists(st.integers(0, 5), min_size=len(ids), max_size=len(ids)))
    weights = data.draw(
        st.lists(st.sampled_from([0.3, 0.5, 1.0, 2.0]), min_size=len(ids), max_size=len(ids))
    )
    eligible = lambda item: item not in ineligible  # noqa: E731
    assert merge_candidates(lists, reserved, k, eligible, weights) == _reference_merge(
        lists, reserved, k, eligible, weights
    )
