"""Business rules from a YAML file: filters, boosts, per-category caps and pins. Pure.

The format is documented in ``infra/rules.example.yaml``; unknown keys or wrong types raise
``ConfigError`` when the file is loaded, never at request time.

Order in the pipeline (each step takes and returns ``ScoredItem`` lists, best first):

1. ``rules.filter(items, categories_of)``  — drop excluded ids and categories;
2. ``rules.boost(items, categories_of)``   — adjust raw ranker scores, re-sort (stable)
   (1 and 2 together: ``rules.apply_before_rerank``);
3. ``serving.rerank.mmr_rerank(..., category_caps=rules.category_caps,
   default_cap=rules.default_cap)`` — diversity and caps in one greedy pass
   (or ``rules.cap(items, categories_of, k)`` when MMR is off);
4. ``rules.pin(items, k, categories_of, eligible=..., now_ms=...)`` — put promoted items at
   fixed positions, only if they are eligible for this request (= ``rules.apply_after_rerank``).

Serving runs steps 1-3 on arrays instead (issue 19): ``rules.on(catalogue_index)`` compiles the
filters and boosts into masks over one catalogue snapshot's rows (``CatalogueRules``), and
``serving.pipeline.diversify`` runs them and ``serving.rerank.mmr_select`` on the ranked rows,
making ``ScoredItem``s only for the slate; the object methods above stay the specification
(``tests/unit/serving/test_ranked_rows_equal_objects.py`` holds the two equal).

Boosts: ``multiply`` is sign-safe, ``score + (multiply - 1) * |score|``, so a boost of 1.2 raises
a negative logit too (plain multiplication would lower it); ``add`` is added afterwards. Every
matching boost applies, in file order.

Example::

    >>> rules = Rules.from_dict({"filters": {"exclude_item_ids": ["b"]},
    ...                          "boosts": [{"categories": ["Comedy"], "add": 1.0}]})
    >>> cats = {"a": ("Drama",), "b": ("Drama",), "c": ("Comedy",)}.get
    >>> items = [ScoredItem("a", 2.0, "ann"), ScoredItem("b", 1.5, "ann"), ScoredItem("c", 1.2, "ann")]
    >>> [(i.item_id, i.score) for i in rules.boost(rules.filter(items, cats), cats)]
    [('c', 2.2), ('a', 2.0)]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from core.errors import ConfigError
from core.per_snapshot import PerSnapshot
from retrieval.catalog_index import CatalogIndex
from serving.ranked import RankedRows
from serving.rerank import CategoriesOf, ScoredItem
from serving.yaml_file import read_yaml

PINNED_SOURCE = "pinned"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FilterRules(_Strict):
    exclude_item_ids: frozenset[str] = frozenset()
    exclude_categories: frozenset[str] = frozenset()


class Boost(_Strict):
    """Applies to an item whose id is listed or which has ANY of the listed categories."""

    item_ids: frozenset[str] = frozenset()
    categories: frozenset[str] = frozenset()
    multiply: float = Field(default=1.0, gt=0)
    add: float = 0.0

    @model_validator(mode="after")
    def _targets_something(self) -> Boost:
        if not self.item_ids and not self.categories:
            raise ValueError("a boost needs item_ids or categories")
        return self

    def matches(self, item_id: str, categories: frozenset[str]) -> bool:
        return item_id in self.item_ids or not self.categories.isdisjoint(categories)

    def apply(self, score: float) -> float:
        return score + (self.multiply - 1.0) * abs(score) + self.add


class CapRules(_Strict):
    default: int | None = Field(default=None, ge=1)
    per_category: dict[str, int] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _positive(self) -> CapRules:
        bad = {c: n for c, n in self.per_category.items() if n < 1}
        if bad:
            raise ValueError(f"caps must be >= 1, got {bad}")
        return self


class Pin(_Strict):
    """Item ``item_id`` at 0-based ``position`` while ``start <= now < end`` (both optional)."""

    item_id: str = Field(min_length=1)
    position: int = Field(ge=0)
    start: datetime | None = None
    end: datetime | None = None
    label: str = ""

    @model_validator(mode="after")
    def _window(self) -> Pin:
        for name in ("start", "end"):
            moment = getattr(self, name)
            if moment is not None and moment.tzinfo is None:
                raise ValueError(f"{name} must carry a timezone, e.g. 2026-12-01T00:00:00Z")
        if self.start and self.end and self.end <= self.start:
            raise ValueError("end must be after start")
        return self

    def active(self, now_ms: int | None) -> bool:
        if now_ms is None:
            return self.start is None and self.end is None
        if self.start is not None and now_ms < self.start.timestamp() * 1000:
            return False
        return self.end is None or now_ms < self.end.timestamp() * 1000


class RulesFile(_Strict):
    version: int = Field(default=1, ge=1, le=1)
    filters: FilterRules = FilterRules()
    boosts: tuple[Boost, ...] = ()
    caps: CapRules = CapRules()
    pins: tuple[Pin, ...] = ()

    @model_validator(mode="after")
    def _pins_do_not_collide(self) -> RulesFile:
        positions = [p.position for p in self.pins]
        if len(set(positions)) != len(positions):
            raise ValueError(f"two pins share a position: {sorted(positions)}")
        items = [p.item_id for p in self.pins]
        if len(set(items)) != len(items):
            raise ValueError("an item is pinned twice")
        return self


class Rules:
    """Loaded, validated business rules; see the module docstring for the order of the steps."""

    def __init__(self, spec: RulesFile | None = None) -> None:
        self.spec = spec or RulesFile()
        # Steps 1-2 over the rows of one catalogue snapshot, compiled on its first use.
        self.on: PerSnapshot[CatalogIndex, CatalogueRules] = PerSnapshot(
            lambda index: CatalogueRules(self.spec, index)
        )

    @classmethod
    def load(cls, path: str | Path) -> Rules:
        """Read and validate a YAML rules file; ``ConfigError`` names the file and the bad key."""
        return cls.from_dict(read_yaml(path, "rules"), origin=str(path))

    @classmethod
    def from_dict(cls, data: Any, *, origin: str = "rules") -> Rules:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{origin}: the top level must be a mapping")
        try:
            return cls(RulesFile.model_validate(data))
        except ValidationError as exc:
            raise ConfigError(f"{origin}: {_describe(exc)}") from exc

    @property
    def category_caps(self) -> Mapping[str, int]:
        return self.spec.caps.per_category

    @property
    def default_cap(self) -> int | None:
        return self.spec.caps.default

    def apply_before_rerank(
        self, items: Sequence[ScoredItem], categories_of: CategoriesOf
    ) -> list[ScoredItem]:
        """Steps 1-2: ``filter`` then ``boost`` (the result is sorted best first)."""
        return self.boost(self.filter(items, categories_of), categories_of)

    def apply_after_rerank(
        self,
        items: Sequence[ScoredItem],
        k: int,
        categories_of: CategoriesOf,
        *,
        eligible: Callable[[str], bool],
        now_ms: int | None = None,
    ) -> list[ScoredItem]:
        """Step 4: ``pin`` (caps belong to step 3, inside MMR or ``cap``)."""
        return self.pin(items, k, categories_of, eligible=eligible, now_ms=now_ms)

    def allows(self, item_id: str, categories_of: CategoriesOf) -> bool:
        """False when the filters exclude the item (by id or by any of its categories)."""
        rules = self.spec.filters
        if item_id in rules.exclude_item_ids:
            return False
        return rules.exclude_categories.isdisjoint(categories_of(item_id) or ())

    def filter(self, items: Sequence[ScoredItem], categories_of: CategoriesOf) -> list[ScoredItem]:
        rules = self.spec.filters
        if not rules.exclude_item_ids and not rules.exclude_categories:
            return list(items)  # nothing to filter: no category lookup per candidate
        return [item for item in items if self.allows(item.item_id, categories_of)]

    def boost(self, items: Sequence[ScoredItem], categories_of: CategoriesOf) -> list[ScoredItem]:
        """Boosted scores, re-sorted best first (stable: equal scores keep their order)."""
        if not self.spec.boosts:
            return list(items)
        boosted = []
        for item in items:
            categories = frozenset(categories_of(item.item_id) or ())
            score = item.score
            for boost in self.spec.boosts:
                if boost.matches(item.item_id, categories):
                    score = boost.apply(score)
            boosted.append(ScoredItem(item.item_id, score, item.source))
        return sorted(boosted, key=lambda item: -item.score)

    def cap(
        self, items: Sequence[ScoredItem], categories_of: CategoriesOf, k: int
    ) -> list[ScoredItem]:
        """The first ``k`` items that keep every category within its cap (use when MMR is off)."""
        counts: dict[str, int] = {}
        kept: list[ScoredItem] = []
        for item in items:
            if len(kept) >= k:
                break
            categories = tuple(categories_of(item.item_id) or ())
            if any(counts.get(c, 0) >= self._cap_of(c) for c in categories):
                continue
            for c in categories:
                counts[c] = counts.get(c, 0) + 1
            kept.append(item)
        return kept

    def pin(
        self,
        items: Sequence[ScoredItem],
        k: int,
        categories_of: CategoriesOf,
        *,
        eligible: Callable[[str], bool],
        now_ms: int | None = None,
    ) -> list[ScoredItem]:
        """Place active, eligible pins at their positions; the slate stays at most ``k`` long.

        ``eligible(item_id)`` is the request's own check (known item, available, not seen or
        excluded, passes the request filters); the rules' filters are checked here as well.
        A pinned item that was already in the slate moves (keeping its score); one that was not
        takes the score of the item whose slot it takes. Positions past the end append.
        """
        pins = [
            pin
            for pin in sorted(self.spec.pins, key=lambda p: p.position)
            if pin.position < k
            and pin.active(now_ms)
            and eligible(pin.item_id)
            and self.allows(pin.item_id, categories_of)
        ]
        # Take every pinned item out first, so that inserting in position order never shifts
        # a pin placed before.
        own_scores = {i.item_id: i.score for i in items}
        pinned_ids = {pin.item_id for pin in pins}
        slate = [item for item in items if item.item_id not in pinned_ids]
        for pin in pins:
            position = min(pin.position, len(slate))
            score = own_scores.get(pin.item_id)
            if score is None:
                score = slate[min(position, len(slate) - 1)].score if slate else 0.0
            slate.insert(position, ScoredItem(pin.item_id, score, PINNED_SOURCE))
        return slate[:k]

    def _cap_of(self, category: str) -> float:
        if category in self.spec.caps.per_category:
            return self.spec.caps.per_category[category]
        return self.spec.caps.default if self.spec.caps.default is not None else float("inf")


class CatalogueRules:
    """Steps 1-2 (``Rules.filter``, then ``Rules.boost``) on ``RankedRows``: the filters as one
    mask over a catalogue's rows, each boost as the mask of the rows it matches, so a request
    pays a few array operations instead of a category lookup per candidate. Equal to
    ``Rules.apply_before_rerank`` on the same items, scores to the bit
    (``tests/unit/serving/test_rules.py``)."""

    def __init__(self, spec: RulesFile, index: CatalogIndex) -> None:
        filters = spec.filters
        self._allowed: np.ndarray | None = None
        if filters.exclude_item_ids or filters.exclude_categories:
            allowed = np.ones(len(index), dtype=bool)
            allowed[index.rows(filters.exclude_item_ids)] = False
            for category in filters.exclude_categories:
                allowed[index.category_rows(category)] = False
            self._allowed = allowed
        self._boosts: list[tuple[np.ndarray, float, float]] = []
        for boost in spec.boosts:
            matches = np.zeros(len(index), dtype=bool)
            matches[index.rows(boost.item_ids)] = True
            for category in boost.categories:
                matches[index.category_rows(category)] = True
            self._boosts.append((matches, boost.multiply, boost.add))

    def apply(self, ranked: RankedRows) -> RankedRows:
        """The allowed items, boosted and re-sorted best first (stable, as ``Rules.boost``)."""
        if self._allowed is not None:
            ranked = ranked.take(np.flatnonzero(self._allowed[ranked.rows]))
        if not self._boosts:
            return ranked
        scores = ranked.scores.copy()
        for matches, multiply, add in self._boosts:  # in file order, as ``Boost.apply``
            hit = matches[ranked.rows]
            score = scores[hit]
            scores[hit] = score + (multiply - 1.0) * np.abs(score) + add
        return ranked.rescored(scores).take(np.argsort(-scores, kind="stable"))


def _describe(exc: ValidationError) -> str:
    """One line per problem: ``boosts.0.multiply: Input should be greater than 0``."""
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or '(top level)'}: {error['msg']}"
        for error in exc.errors()
    )
