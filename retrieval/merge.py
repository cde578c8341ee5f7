"""Merging candidate lists: reserved slots, weighted rank fusion, exact filters, never empty.

Rules (``merge_candidates``, pure):

* Ineligible items (seen, dismissed, excluded by the request, failing category/availability
  filters) are dropped first, whatever a source did; ranks count eligible items only.
* Every item gets a fused score, weighted reciprocal-rank fusion:
  ``sum over sources s proposing it of weight_s / (rrf_c + rank_s)`` (rank from 0). Raw scores of
  different sources are not comparable (inner products, probabilities, counts); ranks are.
* Reserved slots (the per-source quota) come first: each source, in the given order, places its
  best ``reserved`` items not already placed. This guarantees exposure to sources that rarely win
  the fusion (fresh and cold items). The remaining slots go to the best fused scores.
* De-duplication: one candidate per item; ``score`` is the fused score, ``source`` the source that
  contributed most to it, ``sources`` every source that proposed it (largest contribution first).
* Output is ordered by fused score, best first (ties by item id).

On ML-1M validation items, fixed round-robin quotas did not beat the best single source;
fusion did (docs/benchmarks/retrieval.md has the held-out figures).

``CandidateRetriever`` asks each source, merges, and if the answer is still short of ``k`` asks
the fallback source (popular over the whole catalogue), so it is never empty while eligible
items remain. A failing source (e.g. Milvus down) is logged and skipped, never raised.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, wait
from dataclasses import dataclass, field, replace

from retrieval.catalog import ItemCatalog
from retrieval.sources import (
    Candidate,
    CandidateSource,
    RetrievalRequest,
    best_first,
)

log = logging.getLogger(__name__)

FALLBACK_ROUNDS = 3  # fallback calls per request at most (more only when seen items are left out)

RRF_C = 60.0

# Told how long each source took: (source name, wall seconds, its thread's CPU seconds). Called
# on the thread that asked the source, also for a source that answered after the timeout; the
# fallback source is reported as "fallback".
SourceTimer = Callable[[str, float, float], None]


def merge_candidates(
    lists: Sequence[tuple[str, Sequence[Candidate]]],
    reserved: Sequence[int],
    k: int,
    is_eligible: Callable[[str], bool] = lambda _item: True,
    weights: Sequence[float] | None = None,
    rrf_c: float = RRF_C,
) -> list[Candidate]:
    """Merge ``(source name, candidates best first)`` lists into at most ``k`` candidates."""
    weights = [1.0] * len(lists) if weights is None else list(weights)
    if not len(lists) == len(reserved) == len(weights):
        raise ValueError("one reserved count and one weight per source list")
    # Runs once per request over every source's proposals (≈ 600): one eligibility call per
    # distinct item, the fused score summed as contributions arrive (in source order, as a sum
    # over them would), and one C-level sort of all items serving both the fill and the output.
    eligible: dict[str, bool] = {}
    eligible_lists: list[list[str]] = []
    contributions: dict[str, dict[str, float]] = {}
    fused: dict[str, float] = {}
    for (name, candidates), weight in zip(lists, weights, strict=True):
        ranked: list[str] = []
        for candidate in candidates:
            item = candidate.item_id
            parts = contributions.get(item)
            if parts is not None and name in parts:
                continue  # a source repeating an item: its best rank counts
            ok = eligible.get(item)
            if ok is None:
                ok = eligible[item] = is_eligible(item)
            if not ok:
                continue
            part = weight / (rrf_c + len(ranked))
            if parts is None:
                contributions[item] = {name: part}
                fused[item] = part
            else:
                parts[name] = part
                fused[item] += part
            ranked.append(item)
        eligible_lists.append(ranked)
    chosen: set[str] = set()
    for ranked, quota in zip(eligible_lists, reserved, strict=True):
        placed = 0
        for item in ranked:
            if placed >= quota or len(chosen) >= k:
                break
            if item not in chosen:
                chosen.add(item)
                placed += 1
    by_score = best_first(fused.items())
    for item, _ in by_score:
        if len(chosen) >= k:
            break
        chosen.add(item)
    result = []
    for item, score in by_score:
        if item not in chosen:
            continue
        parts = contributions[item]
        names = (
            tuple(parts) if len(parts) == 1 else tuple(sorted(parts, key=_by_contribution(parts)))
        )
        result.append(Candidate(item, score, names[0], names))
    return result


def _by_contribution(parts: dict[str, float]) -> Callable[[str], tuple[float, str]]:
    """Sort key of a source name: largest contribution first, ties by name."""
    return lambda name: (-parts[name], name)


@dataclass(frozen=True)
class SourcePlan:
    """How a source takes part: ``reserved`` guaranteed slots (per 200 candidates) and its weight."""

    source: CandidateSource
    reserved: int = 0
    weight: float = 1.0


@dataclass(frozen=True)
class RetrievalResult:
    candidates: list[Candidate]
    failed_sources: tuple[str, ...] = ()
    used_fallback: bool = False
    per_source: dict[str, int] = field(default_factory=dict)  # raw candidates each source gave


class CandidateRetriever:
    """Asks every source for ``k`` items, merges them, falls back when the answer is short.

    ``reserved`` counts are given per ``reference_k`` candidates and scaled to the request's ``k``
    (rounded up).
    """

    def __init__(
        self,
        plans: Sequence[SourcePlan],
        *,
        catalog: ItemCatalog | None = None,
        fallback: CandidateSource | None = None,
        reference_k: int = 200,
        rrf_c: float = RRF_C,
        executor: Executor | None = None,
    ) -> None:
        """``executor``: ask the sources in parallel on it, so ``retrieve(timeout_s=...)`` can
        give up on a slow one; without it they are asked one after the other."""
        if not plans and fallback is None:
            raise ValueError("at least one source or a fallback is needed")
        self.plans = list(plans)
        self.catalog = catalog
        self.fallback = fallback
        self.reference_k = reference_k
        self.rrf_c = rrf_c
        self.executor = executor

    def _fill_from_fallback(
        self,
        fallback: CandidateSource,
        request: RetrievalRequest,
        merged: list[Candidate],
        on_source: SourceTimer | None,
    ) -> bool:
        """Append the fallback's candidates to ``merged`` up to ``request.k``; True if any.

        Items of its answer the user has seen are left out and not offered again, so it is
        asked again (``FALLBACK_ROUNDS`` at most) for the rest."""
        used, taken = False, {c.item_id for c in merged}
        for _ in range(FALLBACK_ROUNDS):
            missing = request.k - len(merged)
            if missing <= 0:
                break
            wider = replace(
                request.exclusions, request=request.exclusions.request | frozenset(taken)
            )
            fallback_request = replace(request, k=missing, exclusions=wider)
            extra = self._ask(fallback, fallback_request, on_source, "fallback") or []
            eligible = self._eligible(request, [c.item_id for c in extra])
            kept = [c for c in extra if c.item_id not in taken and eligible(c.item_id)]
            taken.update(c.item_id for c in extra)
            used = used or bool(kept)
            merged.extend(Candidate(c.item_id, 0.0, c.source, (c.source,)) for c in kept)
            if len(extra) < missing or request.seen_among is None:
                break  # nothing more to have, or no seen item was left out to replace
        return used

    def _eligible(
        self, request: RetrievalRequest, candidates: Sequence[str]
    ) -> Callable[[str], bool]:
        """The request's eligibility test for ``candidates``: its exclusions, the items of them
        the user has seen (``RetrievalRequest.seen_among``, one lookup) and the filters."""
        excluded, filters, catalog = request.exclusions.all(), request.filters, self.catalog
        if request.seen_among is not None and candidates:
            excluded = excluded | request.seen_among(list(dict.fromkeys(candidates)))
        if catalog is None:
            return lambda item_id: item_id not in excluded
        passes = catalog.passes

        def is_eligible(item_id: str) -> bool:
            return item_id not in excluded and passes(item_id, filters)

        return is_eligible

    def _ask(
        self,
        source: CandidateSource,
        request: RetrievalRequest,
        on_source: SourceTimer | None = None,
        name: str | None = None,
    ) -> list[Candidate] | None:
        started, started_cpu = time.perf_counter(), time.thread_time()
        try:
            return source.candidates(request)
        except Exception:  # one broken source must not take the slate down
            log.exception("candidate source %s failed", getattr(source, "name", source))
            return None
        finally:
            if on_source is not None:
                on_source(
                    name or source.name,
                    time.perf_counter() - started,
                    time.thread_time() - started_cpu,
                )

    def _ask_all(
        self, request: RetrievalRequest, timeout_s: float | None, on_source: SourceTimer | None
    ) -> list[list[Candidate] | None]:
        """Every plan's answer (``None``: failed or not back within ``timeout_s``)."""
        if self.executor is None:
            return [self._ask(plan.source, request, on_source) for plan in self.plans]
        futures = [
            self.executor.submit(self._ask, plan.source, request, on_source) for plan in self.plans
        ]
        done, _late = wait(futures, timeout=timeout_s)
        for plan, future in zip(self.plans, futures, strict=True):
            if future not in done:
                log.warning(
                    "candidate source %s timed out after %.3fs", plan.source.name, timeout_s
                )
        return [future.result() if future in done else None for future in futures]

    def retrieve(
        self,
        request: RetrievalRequest,
        timeout_s: float | None = None,
        on_source: SourceTimer | None = None,
    ) -> RetrievalResult:
        """Candidates for ``request``; sources slower than ``timeout_s`` count as failed (only
        with an executor). ``on_source`` is told each source's time (``SourceTimer``)."""
        lists: list[tuple[str, list[Candidate]]] = []
        failed: list[str] = []
        per_source: dict[str, int] = {}
        answers = self._ask_all(request, timeout_s, on_source)
        for plan, found in zip(self.plans, answers, strict=True):
            if found is None:
                failed.append(plan.source.name)
                found = []
            per_source[plan.source.name] = len(found)
            lists.append((plan.source.name, found))
        scale = request.k / self.reference_k
        # ceil: a source with reserved slots keeps at least one even in a short request
        reserved = [math.ceil(p.reserved * scale) for p in self.plans]
        is_eligible = self._eligible(request, [c.item_id for _, found in lists for c in found])
        merged = merge_candidates(
            lists, reserved, request.k, is_eligible, [p.weight for p in self.plans], self.rrf_c
        )
        used_fallback = (
            self._fill_from_fallback(self.fallback, request, merged, on_source)
            if self.fallback is not None
            else False
        )
        return RetrievalResult(merged[: request.k], tuple(failed), used_fallback, per_source)
