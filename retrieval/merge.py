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

import functools
import logging
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, wait
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from retrieval.catalog import ItemCatalog, ItemMeta
from retrieval.catalog_index import ROW, CatalogIndex, EligibleItems, first_unique
from retrieval.sources import (
    Candidate,
    CandidateSource,
    RetrievalRequest,
    best_first,
)

log = logging.getLogger(__name__)

_NO_ROWS = np.zeros(0, dtype=ROW)

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
class MergedRows:
    """The merged candidates as arrays, best first: what serving ranks without making a Python
    object per candidate (issue 19). ``rows`` are catalogue rows (``ids[row]`` the item),
    ``scores`` the fused scores (0 for the fallback's items), ``credited[n]`` the index into
    ``names`` of the source credited with item ``n`` (``Candidate.source``: the largest
    contribution, ties by name; the fallback is the last name), ``proposed`` one bool column per
    name: who proposed each item. ``candidates()`` gives the same as ``Candidate``s."""

    rows: np.ndarray
    scores: np.ndarray
    credited: np.ndarray
    proposed: np.ndarray
    index: CatalogIndex
    names: tuple[str, ...]
    fused: FusedRows

    @classmethod
    def of(
        cls,
        fused: FusedRows,
        fallback_rows: np.ndarray,
        index: CatalogIndex,
        names: Sequence[str],
    ) -> MergedRows:
        """The fused items (``fuse_rows``), then the fallback's rows; ``names``: the sources',
        the fallback's last."""
        fallback = len(names) - 1
        fallback_proposed = np.zeros((fallback_rows.size, fallback + 1), dtype=bool)
        fallback_proposed[:, fallback] = True
        return cls(
            rows=np.concatenate([fused.items[fused.selected], fallback_rows]),
            scores=np.concatenate([fused.fused[fused.selected], np.zeros(fallback_rows.size)]),
            credited=np.concatenate(
                [fused.credited(names[:fallback]), np.full(fallback_rows.size, fallback, ROW)]
            ),
            proposed=np.vstack(
                [np.pad(fused.proposed(fallback), ((0, 0), (0, 1))), fallback_proposed]
            ),
            index=index,
            names=tuple(names),
            fused=fused,
        )

    @property
    def ids(self) -> list[str]:
        """The catalogue's item ids: ``ids[row]`` is the item of a row."""
        return self.index.ids

    def __len__(self) -> int:
        return int(self.rows.size)

    def item_ids(self) -> list[str]:
        ids = self.ids
        return [ids[row] for row in self.rows.tolist()]

    def sources(self) -> list[str]:
        """Each item's credited source."""
        names = self.names
        return [names[n] for n in self.credited.tolist()]

    def by_source(self) -> dict[str, int]:
        """How many items each source is credited with (sources credited with none left out)."""
        by_name: dict[str, int] = {}  # the fallback may share a source's name (popular)
        counts = np.bincount(self.credited, minlength=len(self.names)).tolist()
        for name, n in zip(self.names, counts, strict=True):
            if n:
                by_name[name] = by_name.get(name, 0) + n
        return by_name

    def proposed_by(self, name: str) -> np.ndarray:
        """Per item, whether a source named ``name`` proposed it (all False for a name not
        asked)."""
        columns = [n for n, source in enumerate(self.names) if source == name]
        return np.asarray(self.proposed[:, columns].any(axis=1))

    def candidates(self) -> list[Candidate]:
        *names, fallback = self.names
        merged = self.fused.candidates(self.ids, names)
        extra = self.rows[len(merged) :].tolist()
        merged.extend(Candidate(self.ids[row], 0.0, fallback, (fallback,)) for row in extra)
        return merged


@dataclass(frozen=True)
class RetrievalResult:
    """``merged``: the candidates as arrays (serving's path); ``candidates``: the same as
    ``Candidate`` objects, made on first use (the object contract, tests, offline benchmarks)."""

    merged: MergedRows
    failed_sources: tuple[str, ...] = ()
    used_fallback: bool = False
    per_source: dict[str, int] = field(default_factory=dict)  # raw candidates each source gave

    @functools.cached_property
    def candidates(self) -> list[Candidate]:
        return self.merged.candidates()


def fuse_rows(
    answers: Sequence[np.ndarray],
    reserved: Sequence[int],
    k: int,
    eligible: np.ndarray,
    weights: Sequence[float],
    id_rank: np.ndarray,
    rrf_c: float = RRF_C,
) -> FusedRows:
    """``merge_candidates`` on catalogue rows: each source's answer a row array (best first),
    ``eligible`` a mask over the rows, ``id_rank`` the rows' item-id order (ties). Equal to it
    item for item and float for float (the contributions are summed in the same order);
    ``tests/unit/retrieval/test_rows_equal_objects.py`` checks it on random lists."""
    if not len(answers) == len(reserved) == len(weights):
        raise ValueError("one reserved count and one weight per source list")
    lists = [kept[eligible[kept]] for kept in (first_unique(a) for a in answers)]
    if not any(rows.size for rows in lists):
        return FusedRows.empty()
    rows = np.concatenate(lists)
    parts = np.concatenate(
        [
            w / (rrf_c + np.arange(r.size, dtype=np.float64))
            for r, w in zip(lists, weights, strict=True)
        ]
    )
    source_of = np.repeat(np.arange(len(lists)), [r.size for r in lists])
    items, position = np.unique(rows, return_inverse=True)
    fused = np.bincount(position, weights=parts)  # in source order, as the object merge adds
    chosen = np.zeros(items.size, dtype=bool)
    placed_total, start = 0, 0
    for ranked_rows, quota in zip(lists, reserved, strict=True):
        own = position[start : start + ranked_rows.size]
        start += ranked_rows.size
        room = min(quota, k - placed_total)
        if room <= 0:
            continue
        picks = own[~chosen[own]][:room]
        chosen[picks] = True
        placed_total += picks.size
    by_score = np.lexsort((id_rank[items], -fused))
    if placed_total < k:
        fill = by_score[~chosen[by_score]][: k - placed_total]
        chosen[fill] = True
    selected = by_score[chosen[by_score]]
    return FusedRows(items, fused, selected, position, parts, source_of)


@dataclass(frozen=True)
class FusedRows:
    """What ``fuse_rows`` decided: ``items[selected]`` (best first) with ``fused`` scores; the
    contributions (``position``, ``parts``, ``source_of``) name each item's sources."""

    items: np.ndarray
    fused: np.ndarray
    selected: np.ndarray
    position: np.ndarray
    parts: np.ndarray
    source_of: np.ndarray

    @classmethod
    def empty(cls) -> FusedRows:
        none = np.zeros(0, dtype=np.int64)
        return cls(none, np.zeros(0), none, none, np.zeros(0), none)

    def _by_contribution(self, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """The contributions' sources grouped by item, each item's largest first (ties by
        name), and where each selected item's group starts."""
        name_rank = np.argsort(np.argsort(np.array(names, dtype=object), kind="stable"))
        order = np.lexsort((name_rank[self.source_of], -self.parts, self.position))
        return self.source_of[order], np.searchsorted(self.position[order], self.selected)

    def credited(self, names: Sequence[str]) -> np.ndarray:
        """Per selected item, the index of its source: the largest contribution (ties by name)."""
        if not self.selected.size:
            return self.selected
        grouped, starts = self._by_contribution(names)
        return grouped[starts]

    def proposed(self, sources: int) -> np.ndarray:
        """(selected items, ``sources``) bool: which sources proposed each selected item."""
        hit = np.zeros((self.items.size, sources), dtype=bool)
        hit[self.position, self.source_of] = True
        return hit[self.selected]

    def candidates(self, ids: Sequence[str], names: Sequence[str]) -> list[Candidate]:
        """The selected items as ``Candidate``s: source = largest contribution (ties by name),
        ``sources`` every proposer, largest contribution first."""
        if not self.selected.size:
            return []
        grouped_rows, start_rows = self._by_contribution(names)
        grouped, starts = grouped_rows.tolist(), start_rows.tolist()
        counts = np.bincount(self.position, minlength=self.items.size)[self.selected].tolist()
        fused = self.fused[self.selected].tolist()
        items = self.items[self.selected].tolist()
        alone = [(name,) for name in names]  # most items have one proposer: one shared tuple
        result = []
        for item, score, start, count in zip(items, fused, starts, counts, strict=True):
            if count == 1:
                proposers = alone[grouped[start]]
            else:
                proposers = tuple(names[s] for s in grouped[start : start + count])
            result.append(Candidate(ids[item], score, proposers[0], proposers))
        return result


def source_rows(
    source: CandidateSource, request: RetrievalRequest, eligible: EligibleItems
) -> np.ndarray:
    """A source's answer as catalogue rows, best first: ``ranked_indices`` where the source has
    it (every source of this package), else its ``candidates`` (items the catalogue lacks are
    left out)."""
    fast = getattr(source, "ranked_indices", None)
    if fast is not None:
        return np.asarray(fast(request, eligible), dtype=ROW)
    return eligible.index.rows(c.item_id for c in source.candidates(request))


class CandidateRetriever:
    """Asks every source for ``k`` items, merges them, falls back when the answer is short.

    Works on catalogue rows (``retrieval.catalog_index``): sources answer row arrays
    (``ranked_indices``), the request's filters and exclusions are one mask, fusion is
    ``fuse_rows``; the merged items are answered as arrays (``MergedRows``, what serving
    ranks), and ``Candidate`` objects are made only when ``RetrievalResult.candidates`` is
    read. Without a ``catalog`` (tests, ad-hoc use) the catalogue is the items the sources
    answered, and only the exclusions apply (there is no metadata to filter on).

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
        if fallback is not None and catalog is None:
            raise ValueError("a fallback needs the catalogue (it walks the catalogue's items)")
        self.plans = list(plans)
        self.catalog = catalog
        self.index = CatalogIndex(catalog) if catalog is not None else None
        self.fallback = fallback
        self.reference_k = reference_k
        self.rrf_c = rrf_c
        self.executor = executor
        self._names = [p.source.name for p in self.plans]

    def _ask(
        self,
        source: CandidateSource,
        request: RetrievalRequest,
        eligible: EligibleItems | None,
        on_source: SourceTimer | None = None,
        name: str | None = None,
    ) -> np.ndarray | list[Candidate] | None:
        """The source's rows (its candidates, without a catalogue); ``None`` if it failed."""
        started, started_cpu = time.perf_counter(), time.thread_time()
        try:
            if eligible is None:
                return source.candidates(request)
            return source_rows(source, request, eligible)
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
        self,
        request: RetrievalRequest,
        eligible: EligibleItems | None,
        timeout_s: float | None,
        on_source: SourceTimer | None,
    ) -> list[Any]:
        """Every plan's answer (``None``: failed or not back within ``timeout_s``). Sources that
        wait on a service go to the executor; those computing in process (``in_process``: no
        I/O, bounded work) run here meanwhile: a hand-off to a thread costs more than they do."""
        if self.executor is None:
            return [self._ask(p.source, request, eligible, on_source) for p in self.plans]
        futures = {
            n: self.executor.submit(self._ask, p.source, request, eligible, on_source)
            for n, p in enumerate(self.plans)
            if not getattr(p.source, "in_process", False)
        }
        answers = [
            None if n in futures else self._ask(p.source, request, eligible, on_source)
            for n, p in enumerate(self.plans)
        ]
        done, _late = wait(futures.values(), timeout=timeout_s)
        for n, future in futures.items():
            if future in done:
                answers[n] = future.result()
            else:
                log.warning("candidate source %s timed out after %.3fs", self._names[n], timeout_s)
        return answers

    def retrieve(
        self,
        request: RetrievalRequest,
        timeout_s: float | None = None,
        on_source: SourceTimer | None = None,
    ) -> RetrievalResult:
        """Candidates for ``request``; sources slower than ``timeout_s`` count as failed (only
        with an executor). ``on_source`` is told each source's time (``SourceTimer``)."""
        eligible = self.index.eligible(request) if self.index is not None else None
        answers = self._ask_all(request, eligible, timeout_s, on_source)
        failed = tuple(n for n, a in zip(self._names, answers, strict=True) if a is None)
        if eligible is None:  # no catalogue: the answered items are the catalogue
            eligible = _unfiltered([c for a in answers for c in a or ()], request)
            answers = [
                None if a is None else eligible.index.rows(c.item_id for c in a) for a in answers
            ]
        rows = [a if a is not None else _NO_ROWS for a in answers]
        per_source = {n: int(r.size) for n, r in zip(self._names, rows, strict=True)}
        mask, ask_seen = self._without_seen(request, eligible, rows)
        scale = request.k / self.reference_k
        # ceil: a source with reserved slots keeps at least one even in a short request
        reserved = [math.ceil(p.reserved * scale) for p in self.plans]
        fused = fuse_rows(
            rows,
            reserved,
            request.k,
            mask,
            [p.weight for p in self.plans],
            eligible.index.id_rank,
            self.rrf_c,
        )
        extra = (
            self._fill_from_fallback(
                request,
                eligible if ask_seen else EligibleItems(eligible.index, mask),
                fused.items[fused.selected],
                on_source,
                ask_seen,
            )
            if self.fallback is not None
            else _NO_ROWS
        )
        names = (*self._names, self.fallback.name if self.fallback else "fallback")
        merged = MergedRows.of(fused, extra, eligible.index, names)
        return RetrievalResult(merged, failed, bool(extra.size), per_source)

    def _without_seen(
        self, request: RetrievalRequest, eligible: EligibleItems, answers: Sequence[np.ndarray]
    ) -> tuple[np.ndarray, Callable[[Sequence[str]], frozenset[str]] | None]:
        """The eligibility mask less the items the user has seen, and the lookup the fallback
        must still ask (None: the mask lacks every seen item, or there is no lookup): the whole
        seen set when the request can read it (``seen_whole``), else the answered items among it
        (``seen_among``, one lookup)."""
        index = eligible.index
        whole = request.seen_whole() if request.seen_whole is not None else None
        if whole is not None:
            if not whole:
                return eligible.mask, None
            seen_rows = index.rows_aligned(list(whole))  # type: ignore[arg-type]
            mask = eligible.mask.copy()
            mask[seen_rows[seen_rows >= 0]] = False
            return mask, None
        seen_among = request.seen_among
        if seen_among is None:
            return eligible.mask, None
        answered = np.unique(np.concatenate(answers)) if answers else _NO_ROWS
        answered = answered[eligible.mask[answered]]
        seen = seen_among(index.item_ids(answered)) if answered.size else None
        if not seen:
            return eligible.mask, seen_among
        mask = eligible.mask.copy()
        mask[index.rows(seen)] = False
        return mask, seen_among

    def _fill_from_fallback(
        self,
        request: RetrievalRequest,
        eligible: EligibleItems,
        merged: np.ndarray,
        on_source: SourceTimer | None,
        seen_among: Callable[[Sequence[str]], frozenset[str]] | None,
    ) -> np.ndarray:
        """The fallback's rows to append to the ``merged`` rows, up to ``request.k`` in all.

        With ``seen_among`` (``eligible`` does not exclude every seen item), items of its answer
        the user has seen are left out and not offered again, so it is asked again
        (``FALLBACK_ROUNDS`` at most) for the rest."""
        fallback, index = self.fallback, eligible.index
        assert fallback is not None
        if merged.size >= request.k:
            return _NO_ROWS
        taken = np.zeros(len(index), dtype=bool)
        taken[merged] = True
        added: list[np.ndarray] = []
        count = merged.size
        for _ in range(FALLBACK_ROUNDS):
            missing = request.k - count
            if missing <= 0:
                break
            taken_ids = frozenset(index.item_ids(np.flatnonzero(taken)))
            wider = replace(request.exclusions, request=request.exclusions.request | taken_ids)
            answer = self._ask(
                fallback,
                replace(request, k=missing, exclusions=wider),
                EligibleItems(index, eligible.mask & ~taken),
                on_source,
                "fallback",
            )
            extra = answer if isinstance(answer, np.ndarray) else _NO_ROWS
            ok = eligible.mask[extra] & ~taken[extra]
            if seen_among is not None and ok.any():
                seen = seen_among(index.item_ids(extra[ok]))
                if seen:
                    ok &= ~np.isin(extra, index.rows(seen))
            taken[extra] = True
            kept = extra[ok][:missing]
            added.append(kept)
            count += kept.size
            if extra.size < missing or seen_among is None:
                break  # nothing more to have, or no seen item was left out to replace
        return np.concatenate(added) if added else _NO_ROWS


def _unfiltered(answered: Sequence[Candidate], request: RetrievalRequest) -> EligibleItems:
    """The answered items as a catalogue, all eligible but the request's exclusions (there is
    no metadata to filter on)."""
    index = CatalogIndex(ItemCatalog(ItemMeta(c.item_id) for c in answered))
    mask = np.ones(len(index), dtype=bool)
    mask[index.rows(request.exclusions.all())] = False
    return EligibleItems(index, mask)
