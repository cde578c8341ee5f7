"""Business rules: loading and validation of the YAML file, and each step of ``apply``."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import ConfigError
from serving.rerank import ScoredItem, mmr_rerank
from serving.rules import PINNED_SOURCE, Rules

EXAMPLE = Path(__file__).resolve().parents[3] / "infra" / "rules.example.yaml"
CATEGORIES = {
    "a": ("Drama",),
    "b": ("Drama",),
    "c": ("Comedy",),
    "d": ("Horror", "Comedy"),
    "promo": ("Documentary",),
}
cats = CATEGORIES.get


def items(*pairs: tuple[str, float]) -> list[ScoredItem]:
    return [ScoredItem(item_id, score, "ann") for item_id, score in pairs]


def ids(slate: list[ScoredItem]) -> list[str]:
    return [item.item_id for item in slate]


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def test_the_example_file_loads():
    rules = Rules.load(EXAMPLE)
    assert rules.category_caps["Drama"] == 3
    assert rules.default_cap == 4
    assert rules.spec.pins[0].item_id == "2571"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("filters:\n  exclude_ids: [x]\n", "filters.exclude_ids"),  # unknown key
        ("boosts:\n  - categories: [A]\n    multiply: -1\n", "boosts.0.multiply"),
        ("boosts:\n  - add: 1\n", "needs item_ids or categories"),
        ("caps:\n  per_category: {Drama: 0}\n", "caps must be >= 1"),
        (
            "pins:\n  - {item_id: x, position: 0}\n  - {item_id: y, position: 0}\n",
            "share a position",
        ),
        ("pins:\n  - {item_id: x, position: 0, start: 2026-01-01T00:00:00}\n", "timezone"),
        ("version: 2\n", "version"),
        ("- just\n- a list\n", "top level"),
        ("filters: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_files_raise_config_error_naming_the_problem(tmp_path, text, fragment):
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="rules") as caught:
        Rules.load(path)
    assert fragment in str(caught.value)


def test_a_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        Rules.load(tmp_path / "absent.yaml")


def test_an_empty_file_means_no_rules(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text("")
    rules = Rules.load(path)
    slate = items(("a", 1.0), ("c", 0.5))
    assert rules.boost(rules.filter(slate, cats), cats) == slate


def test_filters_drop_ids_and_categories():
    rules = Rules.from_dict(
        {"filters": {"exclude_item_ids": ["a"], "exclude_categories": ["Horror"]}}
    )
    assert ids(rules.filter(items(("a", 3), ("b", 2), ("c", 1), ("d", 0)), cats)) == ["b", "c"]


def test_boosts_are_sign_safe_compose_in_order_and_resort():
    rules = Rules.from_dict(
        {
            "boosts": [
                {"categories": ["Comedy"], "multiply": 1.5},
                {"item_ids": ["c"], "add": 1.0},
            ]
        }
    )
    boosted = rules.boost(items(("a", 2.0), ("c", 1.0), ("d", -2.0)), cats)
    # c: 1.0 + 0.5*1.0 = 1.5, + 1.0 = 2.5; d: -2.0 + 0.5*2.0 = -1.0 (raised, not lowered).
    assert [(i.item_id, i.score) for i in boosted] == [("c", 2.5), ("a", 2.0), ("d", -1.0)]


def test_cap_without_mmr_keeps_the_first_items_within_caps():
    rules = Rules.from_dict({"caps": {"default": 1, "per_category": {"Drama": 2}}})
    slate = items(("a", 5), ("b", 4), ("c", 3), ("d", 2), ("promo", 1))
    # d is blocked by Comedy (c took the one Comedy slot).
    assert ids(rules.cap(slate, cats, k=10)) == ["a", "b", "c", "promo"]
    assert ids(rules.cap(slate, cats, k=2)) == ["a", "b"]


def test_caps_feed_mmr():
    rules = Rules.from_dict({"caps": {"per_category": {"Drama": 1}}})
    slate = items(("a", 5), ("b", 4), ("c", 3))
    picked = mmr_rerank(
        slate,
        3,
        lambda_=1.0,
        categories_of=cats,
        category_caps=rules.category_caps,
        default_cap=rules.default_cap,
    )
    assert ids(picked) == ["a", "c"]


PROMO = {
    "pins": [
        {
            "item_id": "promo",
            "position": 1,
            "start": "2026-11-01T00:00:00Z",
            "end": "2026-12-01T00:00:00Z",
        }
    ]
}


def test_pin_inserts_an_eligible_item_during_its_window_and_keeps_k():
    rules = Rules.from_dict(PROMO)
    slate = items(("a", 3), ("b", 2), ("c", 1))
    pinned = rules.pin(slate, 3, cats, eligible=lambda _: True, now_ms=ms("2026-11-22T00:00:00"))
    assert ids(pinned) == ["a", "promo", "b"]
    assert pinned[1] == ScoredItem("promo", 2, PINNED_SOURCE)  # takes the displaced slot's score


def test_pin_is_skipped_outside_its_window_or_when_not_eligible():
    rules = Rules.from_dict(PROMO)
    slate = items(("a", 3), ("b", 2))
    december = ms("2026-12-05T00:00:00")
    november = ms("2026-11-22T00:00:00")
    assert rules.pin(slate, 2, cats, eligible=lambda _: True, now_ms=december) == slate
    assert rules.pin(slate, 2, cats, eligible=lambda _: True, now_ms=None) == slate
    assert rules.pin(slate, 2, cats, eligible=lambda i: i != "promo", now_ms=november) == slate
    filtered = Rules.from_dict({**PROMO, "filters": {"exclude_categories": ["Documentary"]}})
    assert filtered.pin(slate, 2, cats, eligible=lambda _: True, now_ms=november) == slate
    assert rules.pin(slate, 1, cats, eligible=lambda _: True, now_ms=november) == slate[:1]


def test_a_pinned_item_already_in_the_slate_moves_and_keeps_its_score():
    rules = Rules.from_dict({"pins": [{"item_id": "c", "position": 0}]})
    pinned = rules.pin(items(("a", 3), ("b", 2), ("c", 1)), 3, cats, eligible=lambda _: True)
    assert ids(pinned) == ["c", "a", "b"]
    assert pinned[0].score == 1


def test_later_pins_never_shift_earlier_ones():
    rules = Rules.from_dict(
        {"pins": [{"item_id": "x", "position": 1}, {"item_id": "a", "position": 3}]}
    )
    pinned = rules.pin(items(("a", 4), ("b", 3), ("c", 2), ("d", 1)), 4, cats, eligible=bool)
    assert pinned[1].item_id == "x" and pinned[3].item_id == "a"
    assert ids(pinned) == ["b", "x", "c", "a"]


@settings(max_examples=60, deadline=None)
@given(
    slate_ids=st.lists(st.sampled_from("abcdefgh"), unique=True, max_size=8),
    pins=st.dictionaries(st.sampled_from("abcdxyz"), st.integers(0, 9), max_size=4),
    k=st.integers(1, 8),
)
def test_pins_land_where_asked_without_duplicates(slate_ids, pins, k):
    positions = {}
    for item_id, position in pins.items():
        positions.setdefault(position, item_id)
    spec = {"pins": [{"item_id": i, "position": p} for p, i in positions.items()]}
    slate = [ScoredItem(i, float(-n), "ann") for n, i in enumerate(slate_ids)][:k]
    pinned = Rules.from_dict(spec).pin(slate, k, lambda _: (), eligible=lambda _: True)
    assert len(pinned) <= k
    assert len(set(ids(pinned))) == len(pinned)
    unpinned = [i for i in slate_ids[:k] if i not in positions.values()]
    indexes = [ids(pinned).index(positions[p]) for p in sorted(positions) if p < k]
    assert indexes == sorted(indexes)  # pins keep their relative order
    for position in sorted(p for p in positions if p < k):
        index = ids(pinned).index(positions[position])
        assert index <= position  # a short slate pulls a pin forward, never back
        if len(unpinned) >= k:
            assert index == position


def test_the_whole_order_filter_boost_mmr_with_caps_then_pins():
    rules = Rules.from_dict(
        {
            "filters": {"exclude_item_ids": ["b"]},
            "boosts": [{"categories": ["Comedy"], "add": 10.0}],
            "caps": {"per_category": {"Comedy": 1}},
            "pins": [{"item_id": "promo", "position": 0}],
        }
    )
    candidates = items(("a", 5), ("b", 4), ("c", 3), ("d", 2))
    ready = rules.apply_before_rerank(candidates, cats)
    assert ids(ready) == ["c", "d", "a"]  # b filtered; comedies boosted above a
    diverse = mmr_rerank(
        ready, 3, lambda_=0.7, categories_of=cats, category_caps=rules.category_caps
    )
    assert ids(diverse) == ["c", "a"]  # d is capped out (second Comedy)
    final = rules.apply_after_rerank(diverse, 3, cats, eligible=lambda i: i in CATEGORIES)
    assert ids(final) == ["promo", "c", "a"]


def test_the_docstring_examples_run():
    import doctest

    import serving.rules

    result = doctest.testmod(serving.rules)
    assert result.attempted > 0 and result.failed == 0
