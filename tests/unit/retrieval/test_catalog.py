"""Item catalogue filters and the ItemRows contract."""

import numpy as np
import pytest

from features.rows import ItemFeatureRow
from retrieval.catalog import ItemCatalog, ItemMeta
from retrieval.index import ItemRows
from retrieval.popular import PopularSource
from retrieval.sources import CandidateFilters, RetrievalRequest


def test_filters_match_any_category_and_availability() -> None:
    catalog = ItemCatalog(
        [ItemMeta("a", categories=("Drama", "War")), ItemMeta("b", available=False)]
    )
    drama = CandidateFilters(categories=frozenset({"War", "Comedy"}))
    assert catalog.passes("a", drama)
    assert not catalog.passes("b", CandidateFilters())
    assert catalog.passes("b", CandidateFilters(available_only=False))
    assert not catalog.passes("unknown", CandidateFilters())  # unknown items never pass a filter
    assert catalog.passes("unknown", CandidateFilters(available_only=False))


def test_catalog_and_popularity_come_from_feature_rows() -> None:
    rows = [
        ItemFeatureRow("x", 10, popularity=2.0, categories=("Drama",), created_time_ms=5),
        ItemFeatureRow("y", 10, popularity=3.0, available=False),
    ]
    catalog = ItemCatalog.from_feature_rows(rows)
    assert catalog["x"].created_time_ms == 5 and not catalog["y"].available
    found = PopularSource.from_feature_rows(rows, catalog).candidates(RetrievalRequest(k=5))
    assert [c.item_id for c in found] == ["x"]


def test_item_rows_reject_mismatched_columns() -> None:
    with pytest.raises(ValueError):
        ItemRows(["a", "b"], np.zeros((3, 4), dtype=np.float32))
    with pytest.raises(ValueError):
        ItemRows(["a"], np.zeros((1, 4), dtype=np.float32), available=[True, False])


def test_auto_index_type_is_exact_for_small_catalogues() -> None:
    from retrieval.index import IndexConfig

    assert IndexConfig().resolve_index_type(100_000) == "FLAT"
    assert IndexConfig().resolve_index_type(1_000_000) == "IVF_FLAT"
    assert IndexConfig(index_type="IVF_FLAT").resolve_index_type(10) == "IVF_FLAT"
