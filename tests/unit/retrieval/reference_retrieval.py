"""The object path of retrieval, kept as the reference the serving path is compared with.

Until issue 19 ``CandidateRetriever`` asked every source's ``candidates()`` (lists of
``Candidate`` objects), merged them with ``retrieval.merge.merge_candidates`` and topped the
answer up from the fallback, item by item in Python. Serving now does the same on catalogue rows
(``ranked_indices``, ``fuse_rows``); this module is that earlier path, written as it was (less
the executor), so tests can run both on the same requests and compare the answers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace

from retrieval.catalog import ItemCatalog
from retrieval.merge import FALLBACK_ROUNDS, SourcePlan, merge_candidates
from retrieval.sources import Candidate, CandidateSource, RetrievalRequest


def reference_retrieve(
    plans: Sequence[SourcePlan],
    catalog: ItemCatalog,
    fallback: CandidateSource | None,
    request: RetrievalRequest,
    reference_k: int = 200,
) -> list[Candidate]:
    lists = [(p.source.name, p.source.candidates(request)) for p in plans]
    scale = request.k / reference_k
    reserved = [math.ceil(p.reserved * scale) for p in plans]
    is_eligible = _eligible(request, catalog, [c.item_id for _, found in lists for c in found])
    merged = merge_candidates(lists, reserved, request.k, is_eligible, [p.weight for p in plans])
    if fallback is not None:
        _fill_from_fallback(fallback, catalog, request, merged)
    return merged[: request.k]


def _whole_seen(request: RetrievalRequest) -> frozenset[str] | None:
    """The user's whole seen set, when the request gives it (``seen_whole``)."""
    whole = request.seen_whole() if request.seen_whole is not None else None
    return None if whole is None else frozenset(whole)  # type: ignore[arg-type]


def _eligible(
    request: RetrievalRequest, catalog: ItemCatalog, candidates: Sequence[str]
) -> Callable[[str], bool]:
    excluded, filters = request.exclusions.all(), request.filters
    whole = _whole_seen(request)
    if whole is not None:
        excluded = excluded | whole
    elif request.seen_among is not None and candidates:
        excluded = excluded | request.seen_among(list(dict.fromkeys(candidates)))
    return lambda item_id: item_id not in excluded and catalog.passes(item_id, filters)


def _fill_from_fallback(
    fallback: CandidateSource,
    catalog: ItemCatalog,
    request: RetrievalRequest,
    merged: list[Candidate],
) -> None:
    taken = {c.item_id for c in merged}
    whole = _whole_seen(request)  # known whole: the fallback is never offered a seen item
    for _ in range(FALLBACK_ROUNDS):
        missing = request.k - len(merged)
        if missing <= 0:
            break
        unwanted = frozenset(taken) | (whole or frozenset())
        wider = replace(request.exclusions, request=request.exclusions.request | unwanted)
        extra = fallback.candidates(replace(request, k=missing, exclusions=wider))
        eligible = _eligible(request, catalog, [c.item_id for c in extra])
        kept = [c for c in extra if c.item_id not in taken and eligible(c.item_id)]
        taken.update(c.item_id for c in extra)
        merged.extend(Candidate(c.item_id, 0.0, c.source, (c.source,)) for c in kept)
        if len(extra) < missing or whole is not None or request.seen_among is None:
            break
