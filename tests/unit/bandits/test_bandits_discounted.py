"""Event-time discounted sums: exact order-insensitivity and half-life semantics."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from bandits.discounted import DiscountedSum

DAY = 86_400_000
T0 = 1_700_000_000_000

contributions = st.lists(
    st.tuples(
        st.integers(min_value=T0, max_value=T0 + 60 * DAY),
        st.sampled_from([1.0, 0.5, 2.0, 3.25]),
    ),
    min_size=1,
    max_size=40,
)


def _fold(items: list[tuple[int, float]], half_life: int | None) -> DiscountedSum:
    total = DiscountedSum.empty()
    for t, w in items:
        total = total.add(t, w, half_life)
    return total


@settings(max_examples=150, deadline=None)
@given(contributions, st.randoms(use_true_random=False), st.sampled_from([DAY, 3 * DAY, None]))
def test_sum_is_bit_identical_for_any_order(items, rnd, half_life):
    shuffled = list(items)
    rnd.shuffle(shuffled)
    a, b = _fold(items, half_life), _fold(shuffled, half_life)
    assert a == b
    assert a.value == b.value


@settings(max_examples=100, deadline=None)
@given(contributions, st.sampled_from([DAY, 7 * DAY]))
def test_value_matches_closed_form(items, half_life):
    newest = max(t for t, _ in items)
    expected = math.fsum(w * 2.0 ** (-(newest - t) / half_life) for t, w in items)
    got = _fold(items, half_life).value_at(newest, half_life)
    assert math.isclose(got, expected, rel_tol=1e-12)


def test_half_life_halves_the_weight():
    s = DiscountedSum.empty().add(T0, 1.0, DAY)
    assert math.isclose(s.value_at(T0, DAY), 1.0, rel_tol=1e-15)
    assert math.isclose(s.value_at(T0 + DAY, DAY), 0.5, rel_tol=1e-15)
    assert math.isclose(s.value_at(T0 + 3 * DAY, DAY), 0.125, rel_tol=1e-15)
    later = s.add(T0 + DAY, 1.0, DAY)
    assert math.isclose(later.value_at(T0 + DAY, DAY), 1.5, rel_tol=1e-15)


def test_no_half_life_counts_plainly():
    s = _fold([(T0, 1.0), (T0 + 400 * DAY, 1.0), (T0 - 5 * DAY, 2.0)], None)
    assert s.value_at(T0 + 10_000 * DAY, None) == 4.0


@settings(max_examples=60, deadline=None)
@given(contributions, contributions)
def test_merge_equals_adding_everything(left, right):
    merged = _fold(left, DAY).merge(_fold(right, DAY), DAY)
    assert merged == _fold(left + right, DAY)


def test_serialisation_round_trip():
    s = _fold([(T0, 1.0), (T0 + DAY // 3, 1.0)], DAY)
    assert DiscountedSum.from_list(s.to_list()) == s
