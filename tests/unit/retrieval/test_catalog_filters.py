"""ItemCatalog.passes: the exact filter the merger applies to every source's candidates."""

from retrieval.catalog import ItemCatalog, ItemMeta
from retrieval.sources import CandidateFilters

CATALOG = ItemCatalog(
    [
        ItemMeta("heat", categories=("Crime", "Action")),
        ItemMeta("toy", categories=("Animation",)),
        ItemMeta("gone", categories=("Drama",), available=False),
    ]
)


def test_excluded_categories_drop_items_with_any_of_them():
    filters = CandidateFilters(excluded_categories=frozenset({"Action"}), available_only=False)
    assert [i for i in CATALOG if CATALOG.passes(i, filters)] == ["toy", "gone"]


def test_included_and_excluded_categories_combine():
    filters = CandidateFilters(
        categories=frozenset({"Crime", "Animation"}), excluded_categories=frozenset({"Action"})
    )
    assert [i for i in CATALOG if CATALOG.passes(i, filters)] == ["toy"]


def test_unknown_items_pass_only_an_empty_filter():
    assert CATALOG.passes("nope", CandidateFilters(available_only=False))
    assert not CATALOG.passes("nope", CandidateFilters(excluded_categories=frozenset({"X"})))
