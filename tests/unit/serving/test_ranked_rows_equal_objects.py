"""Rules, MMR and the exploration pool on arrays answer what they answered on ``ScoredItem``s.

Since issue 19 the pipeline ranks into ``RankedRows`` and runs filters, boosts, MMR with caps
(``serving.pipeline.diversify``) and the exploration pool on catalogue rows, making objects only
for the slate. The object path it replaced is ``Rules.apply_before_rerank`` then ``mmr_rerank``
over every ranked ``ScoredItem``, and the pool below (``reference_pool``, the code it replaced).
Both run here on the same 600 requests over one catalogue: random filters, boosts (by id and by
category, multiplied and added, in file order), caps, MMR weights (1, 0.7, 0.3, 0), items with
and without categories and vectors, ties in scores on purpose. Everything must be equal: items
in order, sources, and scores to the bit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from retrieval.catalog import ItemCatalog, ItemMeta
from retrieval.catalog_index import CatalogIndex
from serving.exploration_slots import NEW_ITEM_SOURCES, exploration_pool
from serving.pipeline import diversify
from serving.ranked import RankedRows
from serving.rerank import ScoredItem, categories_from_catalog, mmr_rerank, unit_vectors
from serving.rules import Rules

CATEGORIES = [f"c{n}" for n in range(200)]  # more than 64: bitsets of several words
SOURCES = ("ann", "cooccurrence", "popular", "fresh", "content")
N_ITEMS = 400


def catalogue(rng: np.random.Generator) -> tuple[ItemCatalog, dict[str, np.ndarray]]:
    items, vectors = [], {}
    for n in range(N_ITEMS):
        # a few common categories (overlaps) and some of the rare ones; some items have none
        count = int(rng.integers(0, 4))
        pool = CATEGORIES[:6] if rng.random() < 0.8 else CATEGORIES
        cats = tuple(rng.choice(pool, size=count, replace=False).tolist())
        items.append(ItemMeta(f"i{n:03d}", categories=cats))
        if rng.random() < 0.85:  # some items have no vector, a few a zero vector
            vectors[f"i{n:03d}"] = (
                np.zeros(8) if rng.random() < 0.02 else rng.normal(size=8).astype(np.float32)
            )
    return ItemCatalog(items), vectors


def random_rules(rng: np.random.Generator, ids: Sequence[str]) -> Rules:
    spec: dict = {}
    if rng.random() < 0.5:
        spec["filters"] = {
            "exclude_item_ids": rng.choice(ids, size=int(rng.integers(0, 20))).tolist(),
            "exclude_categories": rng.choice(CATEGORIES[:8], size=int(rng.integers(0, 2))).tolist(),
        }
    boosts = []
    for _ in range(int(rng.integers(0, 4))):
        boost: dict = {"multiply": float(rng.choice([0.5, 1.0, 1.2, 3.0]))}
        if rng.random() < 0.5:
            boost["add"] = float(rng.choice([-1.0, 0.25, 2.0]))
        if rng.random() < 0.5:
            boost["item_ids"] = rng.choice(ids, size=int(rng.integers(1, 30))).tolist()
        else:
            boost["categories"] = rng.choice(CATEGORIES[:8], size=2, replace=False).tolist()
        boosts.append(boost)
    if boosts:
        spec["boosts"] = boosts
    if rng.random() < 0.6:
        caps: dict = {"per_category": {CATEGORIES[0]: int(rng.integers(1, 3))}}
        if rng.random() < 0.5:
            caps["default"] = int(rng.integers(1, 4))
        spec["caps"] = caps
    return Rules.from_dict(spec)


def random_ranked(rng: np.random.Generator, index: CatalogIndex) -> RankedRows:
    n = int(rng.integers(0, 201))
    rows = rng.choice(len(index), size=n, replace=False)
    # integer and repeated scores make ties common; negative ones exercise the sign-safe boost
    if rng.random() < 0.5:
        scores = rng.integers(-3, 4, size=n).astype(np.float64)
    else:
        scores = rng.normal(size=n)
    order = np.argsort(-scores, kind="stable")  # best first, as the pipeline ranks
    labels = rng.integers(0, len(SOURCES), size=n)
    return RankedRows(index, rows[order], scores[order], labels[order], SOURCES)


def reference_pool(ranked: Sequence[ScoredItem], exploit: Sequence[ScoredItem], size: int):
    """The exploration pool as it was computed on objects before issue 19's arrays."""
    taken = {i.item_id for i in exploit}
    rest = [i for i in ranked if i.item_id not in taken]
    new = [i.item_id for i in rest if i.source in NEW_ITEM_SOURCES]
    others = [i.item_id for i in rest if i.source not in NEW_ITEM_SOURCES]
    return list(dict.fromkeys([*new[: size // 2], *others]))[:size]


def as_tuples(items: Sequence[ScoredItem]) -> list[tuple[str, float, str]]:
    return [(i.item_id, i.score, i.source) for i in items]


def test_600_requests_equal_the_object_path():
    rng = np.random.default_rng(19)
    catalog, vectors = catalogue(rng)
    index = CatalogIndex(catalog)
    assert index.category_bits.shape[1] >= 2  # the catalogue's bitsets take several words
    categories_of = categories_from_catalog(catalog)
    row_vectors = unit_vectors(index.ids, vectors)
    seen = {"filtered": 0, "boosted": 0, "capped": 0, "diversified": 0, "new in pool": 0}
    for _ in range(600):
        rules = random_rules(rng, index.ids)
        ranked = random_ranked(rng, index)
        k = int(rng.integers(1, 25))
        lambda_ = float(rng.choice([1.0, 0.7, 0.3, 0.0]))
        with_vectors = bool(rng.random() < 0.7)

        allowed, slate = diversify(
            ranked,
            rules,
            k,
            lambda_=lambda_,
            vectors_of=lambda _index, given=row_vectors if with_vectors else None: given,
        )

        items = ranked.items()
        allowed_objects = rules.apply_before_rerank(items, categories_of)
        slate_objects = mmr_rerank(
            allowed_objects,
            k,
            lambda_=lambda_,
            categories_of=categories_of,
            vectors=vectors if with_vectors else None,
            category_caps=rules.category_caps,
            default_cap=rules.default_cap,
        )
        assert as_tuples(allowed.items()) == as_tuples(allowed_objects)
        assert as_tuples(slate) == as_tuples(slate_objects)

        exploit = slate[: max(0, len(slate) - 1)]
        pool = exploration_pool(allowed, exploit, size=8)
        assert pool == reference_pool(allowed_objects, exploit, 8)

        seen["filtered"] += len(allowed_objects) < len(items)
        before = {i.item_id: i.score for i in items}
        seen["boosted"] += any(i.score != before[i.item_id] for i in allowed_objects)
        uncapped = mmr_rerank(
            allowed_objects,
            k,
            lambda_=lambda_,
            categories_of=categories_of,
            vectors=vectors if with_vectors else None,
        )
        seen["capped"] += slate_objects != uncapped
        seen["diversified"] += [i.item_id for i in slate] != [
            i.item_id for i in allowed_objects[:k]
        ]
        seen["new in pool"] += any(s in NEW_ITEM_SOURCES for s in allowed.source_of(pool).values())
    # the cases this test is about did occur
    assert min(seen.values()) >= 20, seen


def test_an_empty_ranking_and_a_ranking_filtered_away():
    catalog = ItemCatalog([ItemMeta("a", categories=("x",)), ItemMeta("b", categories=("x",))])
    index = CatalogIndex(catalog)
    empty = RankedRows(index, np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.intp), ("ann",))
    assert diversify(empty, Rules(), 5, lambda_=0.5, vectors_of=lambda _index: None)[1] == []
    ranked = RankedRows.of_items([ScoredItem("a", 2.0, "ann"), ScoredItem("b", 1.0, "ann")], index)
    rules = Rules.from_dict({"filters": {"exclude_categories": ["x"]}})
    allowed, slate = diversify(ranked, rules, 5, lambda_=0.5, vectors_of=lambda _index: None)
    assert len(allowed) == 0 and slate == []


def test_the_default_weight_derives_no_similarity():
    catalog = ItemCatalog([ItemMeta("a", categories=("x",)), ItemMeta("b", categories=("y",))])
    index = CatalogIndex(catalog)
    ranked = RankedRows.of_items([ScoredItem("a", 2.0, "ann"), ScoredItem("b", 1.0, "ann")], index)

    def no_vectors(_index):
        raise AssertionError("λ = 1 without caps must not derive the catalogue's vectors")

    _, slate = diversify(ranked, Rules(), 2, lambda_=1.0, vectors_of=no_vectors)
    assert [i.item_id for i in slate] == ["a", "b"]
    assert index._category_bits is None  # nor its category bitsets
