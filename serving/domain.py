"""Domain types of a recommendation request and its answer. No proto types past the servicer."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Filters:
    include_categories: frozenset[str] = frozenset()
    exclude_categories: frozenset[str] = frozenset()
    # Items the catalogue marks unavailable are never served unless a request opts in.
    include_unavailable: bool = False

    @property
    def available_only(self) -> bool:
        return not self.include_unavailable


@dataclass(frozen=True, slots=True)
class RecommendationQuery:
    user_id: str
    k: int
    context: dict[str, str] = field(default_factory=dict)
    exclude_item_ids: frozenset[str] = frozenset()
    filters: Filters = Filters()


@dataclass(frozen=True, slots=True)
class SlateItem:
    item_id: str
    score: float
    source: str
    explanation: str
    propensity: float = 1.0
    team: str = ""  # interleaving: "A" or "B", the ranker that placed the item


@dataclass(frozen=True, slots=True)
class Slate:
    request_id: str
    items: tuple[SlateItem, ...]
    model_version: str
    fallback: bool = False
    fallback_reasons: tuple[str, ...] = ()
    experiment_arm: str = ""
