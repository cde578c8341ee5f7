"""The in-process catalogue: trending scores on the data's own clock, items from every source."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from features.ports import InMemoryFeatureStore
from features.rows import ItemFeatureRow
from features.schema import POPULARITY_HALF_LIFE_MS
from retrieval.content_index import ContentRow
from retrieval.popular import PopularSource
from retrieval.sources import RetrievalRequest
from serving.catalog_view import load_snapshot, trending_scores

DAY = 24 * 3_600_000
T = 1_537_800_000_000  # the last event of ml-latest-small, September 2018


def trending(rows: list[ItemFeatureRow], k: int) -> list[str]:
    store = InMemoryFeatureStore()
    store.write_items(rows)
    snapshot = load_snapshot(store, [r.item_id for r in rows])
    ranked = PopularSource(snapshot.popularity, snapshot.catalog).candidates(RetrievalRequest(k=k))
    return [c.item_id for c in ranked]


def test_years_old_popularity_is_ranked_not_flattened_to_the_id_order() -> None:
    """Issue 17: decayed to the data's last day with a one-day half-life, popularity of items
    last touched years earlier underflows to 0.0, and a ranking of zeros is the id order
    (``1, 10, 100, 100044, …``). In the log domain each keeps its place."""
    recent = [ItemFeatureRow(f"r{n}", T, popularity=float(n)) for n in (1, 2, 3)]
    # Heavy items whose last events were 3-4 years before the end; a larger id is more recent
    # here, so their trending order is the reverse of the id order.
    old = [ItemFeatureRow(f"o{n}", T - (1400 - 30 * n) * DAY, popularity=500.0) for n in range(10)]
    for row in old:  # the premise: the plain decayed value is exactly zero
        assert row.popularity * 2.0 ** (-(T - row.event_time_ms) / POPULARITY_HALF_LIFE_MS) == 0
    assert trending([*old, *recent], 8) == ["r3", "r2", "r1", "o9", "o8", "o7", "o6", "o5"]


def test_the_clock_is_the_newest_row_with_popularity_not_a_touch_without_it() -> None:
    """A row whose popularity is zero (e.g. touched only by an impression at serving time)
    carries no mass: it must not move "now" and decay everything else away."""
    rows = [ItemFeatureRow("a", T, popularity=4.0), ItemFeatureRow("b", T - DAY, popularity=16.0)]
    touched = ItemFeatureRow("c", T + 3000 * DAY, popularity=0.0)
    scores, at = trending_scores([*rows, touched])
    assert at == T and set(scores) == {"a", "b"}
    assert math.isclose(scores["a"], 2.0) and math.isclose(scores["b"], 3.0)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0.01, 1e6), st.integers(0, 2000 * DAY)), min_size=2, max_size=20)
)
def test_log_scores_order_items_as_their_decayed_popularity_would(pairs) -> None:
    """Wherever the plain decayed values are distinguishable (no underflow), the trending
    order is theirs; the log domain only adds an order where they all became 0.0."""
    rows = [ItemFeatureRow(f"i{n}", T - age, popularity=p) for n, (p, age) in enumerate(pairs)]
    scores, at = trending_scores(rows)
    plain = {
        r.item_id: r.popularity * 2.0 ** (-(at - r.event_time_ms) / POPULARITY_HALF_LIFE_MS)
        for r in rows
    }
    for a in plain:
        for b in plain:
            if plain[a] > 0 and plain[b] > 0 and plain[a] > plain[b] * (1 + 1e-9):
                assert scores[a] > scores[b]


def test_the_catalogue_is_the_index_items_plus_new_content_items() -> None:
    store = InMemoryFeatureStore()
    store.write_items(
        [
            ItemFeatureRow("i1", T, popularity=2.0, title="Heat", categories=("Crime",)),
            ItemFeatureRow("gone", T, title="Pulled", available=False),
        ]
    )
    content = [
        ContentRow("new1", "Brand new", ("Drama",), True, T + DAY, T + DAY),
        ContentRow("gone", "Pulled", ("Drama",), True, T, T),  # the online row says unavailable
    ]
    snapshot = load_snapshot(store, ["i1", "i2", "gone"], content)
    assert set(snapshot.catalog) == {"i1", "i2", "gone", "new1"}
    assert snapshot.catalog["i1"].title == "Heat"
    assert snapshot.catalog["new1"].title == "Brand new"
    assert snapshot.catalog["new1"].created_time_ms == T + DAY
    assert not snapshot.catalog["gone"].available
    assert snapshot.catalog["i2"].available  # no row anywhere: bare metadata
    assert snapshot.as_of_ms == T + DAY  # the newest event time anywhere in the catalogue
    assert set(snapshot.content) == {"new1", "gone"}
    np.testing.assert_allclose(snapshot.popularity["i1"], 1.0)


def test_showing_an_item_does_not_take_it_out_of_trending() -> None:
    """Issue 17, stream side. The stream's own rows: years-old interactions (a replay), then one
    impression of the most popular item stamped at serving time (the wall clock, years later).
    Its popularity stays referenced at its latest interaction, and the trending clock with it."""
    from streams.item_features import ItemState, ItemUpdate, apply_update, item_row

    states = {item: ItemState() for item in ("a", "b", "c")}
    for item, count in (("a", 5), ("b", 3), ("c", 1)):
        for n in range(count):
            update = ItemUpdate("interaction", item, f"{item}{n}", T + n, event_type="view")
            states[item], _ = apply_update(states[item], update)
    before = trending([item_row(i, s) for i, s in states.items()], 3)
    impression = ItemUpdate("impression", "a", "shown", T + 3000 * DAY)
    states["a"], _ = apply_update(states["a"], impression)
    after = trending([item_row(i, s) for i, s in states.items()], 3)
    assert before == ["a", "b", "c"]
    assert after == before
    assert trending_scores(item_row(i, s) for i, s in states.items())[1] == T + 4
