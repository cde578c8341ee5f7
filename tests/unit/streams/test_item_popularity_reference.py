"""Issue 17, stream side: an item's popularity is referenced at its latest *interaction*.

Impressions are stamped at serving time (the wall clock, possibly years after a replayed dataset's
interactions) and catalogue updates at whatever time the catalogue was loaded; neither may move
the reference nor prune the mass, or each slate shown takes its items out of "trending"."""

from __future__ import annotations

import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from features.schema import POPULARITY_HALF_LIFE_MS
from streams.item_features import HOUR_MS, ItemState, ItemUpdate, apply_update, item_row

DAY_MS = 24 * HOUR_MS
BASE_MS = 1_537_800_000_000  # ml-latest-small's last day, September 2018
ITEMS = ("i0", "i1", "i2", "i3")

interactions = st.lists(
    st.tuples(
        st.sampled_from(ITEMS),
        st.sampled_from(["view", "click", "add_to_cart", "purchase", "rating", "dismiss"]),
        st.integers(0, 20 * DAY_MS),  # wider than the 14-day horizon: some mass is pruned
    ),
    min_size=1,
    max_size=40,
).map(
    lambda rows: [
        ItemUpdate("interaction", item, f"e{n}", BASE_MS + t, event_type=kind)
        for n, (item, kind, t) in enumerate(rows)
    ]
)
# Impressions and catalogue updates at any time from the interactions' first day to ~8 years on.
others = st.lists(
    st.tuples(
        st.sampled_from(ITEMS),
        st.sampled_from(["impression", "catalog"]),
        st.integers(0, 3000 * DAY_MS),
    ),
    max_size=30,
).map(
    lambda rows: [
        ItemUpdate(kind, item, f"o{n}", BASE_MS + t, title=f"t{n}")  # type: ignore[arg-type]
        for n, (item, kind, t) in enumerate(rows)
    ]
)


def fold(updates: list[ItemUpdate]) -> dict[str, ItemState]:
    states: dict[str, ItemState] = {}
    for update in updates:
        states[update.item_id], _ = apply_update(states.get(update.item_id, ItemState()), update)
    return states


def trending_order(states: dict[str, ItemState]) -> list[str]:
    """Items by their popularity decayed to one common time, compared in the log domain (no
    underflow): ``log2 p + ref / H`` orders them as ``p · 2^(−(t − ref)/H)`` does for every ``t``."""
    rows = [item_row(item, state) for item, state in states.items()]
    keyed = {
        r.item_id: math.log2(r.popularity) + (r.popularity_time_ms or 0) / POPULARITY_HALF_LIFE_MS
        for r in rows
        if r.popularity > 0
    }
    return sorted(keyed, key=lambda item: (-keyed[item], item))


@settings(max_examples=150, deadline=None)
@given(interactions, others, st.integers(0, 10**6), st.integers(0, 6))
def test_impressions_and_catalogue_updates_never_change_popularity(
    events: list[ItemUpdate], extra: list[ItemUpdate], seed: int, duplicates: int
) -> None:
    rng = random.Random(seed)
    mixed = [*events, *extra]
    rng.shuffle(mixed)  # interleaved in any order, some delivered twice
    mixed += [rng.choice(mixed) for _ in range(duplicates)]
    alone, together = fold(events), fold(mixed)

    assert trending_order(together) == trending_order(alone)
    for item, state in alone.items():
        plain, mixed_row = item_row(item, state), item_row(item, together[item])
        # The value at the reference and the reference itself: exactly those of the interactions.
        assert mixed_row.popularity == plain.popularity
        assert mixed_row.popularity_time_ms == plain.popularity_time_ms
        assert plain.popularity_time_ms == max(e.event_time_ms for e in events if e.item_id == item)
    for item, state in together.items():
        row = item_row(item, state)
        mine = [u for u in [*events, *extra] if u.item_id == item]
        # The row's event time stays the latest update of any kind (the store's monotone key).
        assert row.event_time_ms == max(u.event_time_ms for u in mine)
        assert row.impressions == sum(u.kind == "impression" for u in mine)
        if item not in alone:  # shown or catalogued, never interacted with: no popularity
            assert (row.popularity, row.popularity_time_ms) == (0.0, None)
