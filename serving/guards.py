"""Circuit breakers around the pipeline's dependencies, so a dead one costs no latency.

Each wrapper keeps the interface it wraps (a ``CandidateSource``, an ``OnlineFeatureReader``, a
``PosteriorReader``): when its breaker is open the call fails at once with
``DependencyUnavailable`` and the pipeline serves its fallback (other sources, popular items,
no exploration). A call slower than ``slow_s`` counts as a failure even when it answers, because
a dependency that answers too late is as good as down for a request with a deadline.
Breaker states are exported as the ``aether_breaker_state{dependency}`` gauge (0 closed,
1 half-open, 2 open; ``serving.server_metrics``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from typing import TypeVar

import numpy as np

from bandits.posterior import BetaPosterior
from core.errors import DependencyUnavailable
from features.ports import OnlineFeatureReader
from features.rows import ItemFeatureRow, UserFeatureRow
from retrieval.catalog_index import EligibleItems
from retrieval.merge import source_rows
from retrieval.sources import Candidate, CandidateSource, RetrievalRequest
from serving.breaker import CircuitBreaker, State
from serving.exploration_slots import PosteriorReader
from serving.seen_items import SeenItems
from serving.server_metrics import set_breaker_state

T = TypeVar("T")


def make_breaker(
    name: str, *, failure_threshold: int = 5, cooldown_s: float = 5.0
) -> CircuitBreaker:
    set_breaker_state(name, "closed")

    def export(breaker_name: str, _old: State, new: State) -> None:
        set_breaker_state(breaker_name, new)

    return CircuitBreaker(
        name, failure_threshold=failure_threshold, cooldown_s=cooldown_s, on_state_change=export
    )


def guarded(breaker: CircuitBreaker, call: Callable[[], T], slow_s: float) -> T:
    if not breaker.allow():
        raise DependencyUnavailable(breaker.name, "circuit open")
    started = time.monotonic()
    try:
        result = call()
    except Exception:
        breaker.record_failure()
        raise
    if time.monotonic() - started > slow_s:
        breaker.record_failure()
    else:
        breaker.record_success()
    return result


class GuardedSource:
    def __init__(self, source: CandidateSource, breaker: CircuitBreaker, slow_s: float) -> None:
        self.name = source.name
        self._source, self._breaker, self._slow_s = source, breaker, slow_s

    def candidates(self, request: RetrievalRequest) -> list[Candidate]:
        return guarded(self._breaker, lambda: self._source.candidates(request), self._slow_s)

    def ranked_indices(self, request: RetrievalRequest, eligible: EligibleItems) -> np.ndarray:
        return guarded(
            self._breaker, lambda: source_rows(self._source, request, eligible), self._slow_s
        )


class GuardedFeatures:
    def __init__(
        self, features: OnlineFeatureReader, breaker: CircuitBreaker, slow_s: float
    ) -> None:
        self._features, self._breaker, self._slow_s = features, breaker, slow_s

    def read_users(self, user_ids: Sequence[str]) -> dict[str, UserFeatureRow]:
        return guarded(self._breaker, lambda: self._features.read_users(user_ids), self._slow_s)

    def read_items(self, item_ids: Sequence[str]) -> dict[str, ItemFeatureRow]:
        return guarded(self._breaker, lambda: self._features.read_items(item_ids), self._slow_s)


class GuardedSeenItems:
    def __init__(self, seen: SeenItems, breaker: CircuitBreaker, slow_s: float) -> None:
        self._seen, self._breaker, self._slow_s = seen, breaker, slow_s

    def seen_among(self, user_id: str, item_ids: Sequence[str]) -> set[str]:
        return guarded(
            self._breaker, lambda: self._seen.seen_among(user_id, item_ids), self._slow_s
        )

    def members_if_at_most(self, user_id: str, limit: int) -> Collection[str] | None:
        return guarded(
            self._breaker, lambda: self._seen.members_if_at_most(user_id, limit), self._slow_s
        )


class GuardedPosteriors:
    def __init__(self, reader: PosteriorReader, breaker: CircuitBreaker, slow_s: float) -> None:
        self._reader, self._breaker, self._slow_s = reader, breaker, slow_s

    def read(self, item_ids: Sequence[str], segment: str, at_ms: int) -> dict[str, BetaPosterior]:
        return guarded(
            self._breaker, lambda: self._reader.read(item_ids, segment, at_ms), self._slow_s
        )
