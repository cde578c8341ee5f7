"""The one interface every candidate source implements, and the values that cross it.

A source answers ``candidates(request) -> list[Candidate]``: at most ``request.k`` items, best first,
already respecting ``request.exclusions`` and ``request.filters`` as far as it can (sources that
query Milvus push them into the filter expression). The merger (``retrieval.merge``) re-applies
every filter, so a source that cannot filter exactly is still safe.

Sources in this package: ``ann`` (Milvus, user vector), ``cooccurrence`` (item-to-item
transitions), ``popular`` (event-time-decayed popularity), ``fresh`` (recently created items),
``content`` (text embeddings of cold items mapped into the item space).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Protocol, runtime_checkable

import numpy as np


def best_first(scored: Iterable[tuple[str, float]]) -> list[tuple[str, float]]:
    """``(item, score)`` pairs, highest score first, ties by item id: the one candidate order.

    Two stable sorts with C-level keys (by id, then by score descending) give the order of
    ``key=lambda kv: (-kv[1], kv[0])`` for a fraction of its cost on the request path.
    """
    ranked = sorted(scored, key=itemgetter(0))
    ranked.sort(key=itemgetter(1), reverse=True)
    return ranked


@dataclass(frozen=True, slots=True)
class Candidate:
    item_id: str
    score: float
    source: str
    # All sources that proposed the item after merging (``source`` is the first, in quota order).
    sources: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CandidateFilters:
    """Item-side filters. ``categories``: keep items having ANY of them (empty = no filter);
    ``excluded_categories``: drop items having ANY of them."""

    categories: frozenset[str] = frozenset()
    excluded_categories: frozenset[str] = frozenset()
    available_only: bool = True

    @property
    def is_empty(self) -> bool:
        return not self.categories and not self.excluded_categories and not self.available_only


@dataclass(frozen=True, slots=True)
class Exclusions:
    """Items that must never be returned: already seen, dismissed, or excluded by the caller."""

    seen: frozenset[str] = frozenset()
    dismissed: frozenset[str] = frozenset()
    request: frozenset[str] = frozenset()

    def all(self) -> frozenset[str]:
        return self.seen | self.dismissed | self.request

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.seen or item_id in self.dismissed or item_id in self.request

    def __len__(self) -> int:
        return len(self.all())


@dataclass(frozen=True)
class RetrievalRequest:
    """What a source needs to know about the user and the slate being built.

    ``history`` is the user's recent items, oldest first. ``user_vector`` is optional: sources that
    need one (ANN, content) compute it with their ``UserEncoder`` when it is missing.
    ``as_of_ms`` is the event time of the request (no wall clock inside retrieval).
    """

    k: int
    history: tuple[str, ...] = ()
    user_vector: np.ndarray | None = None
    exclusions: Exclusions = field(default_factory=Exclusions)
    filters: CandidateFilters = field(default_factory=CandidateFilters)
    as_of_ms: int | None = None
    user_id: str | None = None
    # Which of the given candidates the user has interacted with beyond ``exclusions.seen`` (the
    # row holds only recent items; serving passes the user's seen set, ``serving.seen_items``).
    # Asked once per request over every source's candidates, before the merge, so that the
    # fallback fills what it removes.
    seen_among: Callable[[Sequence[str]], frozenset[str]] | None = None
    # Optional, for the rows path: the user's whole seen set (ids as str or bytes) when it is
    # small enough to read at once, else None (then ``seen_among`` is asked). Read once, after
    # the sources answered; the fallback then never proposes a seen item.
    seen_whole: Callable[[], Collection[str] | Collection[bytes] | None] | None = None

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")


@runtime_checkable
class CandidateSource(Protocol):
    """``candidates`` is the contract. Optional, for serving (``retrieval.merge``):
    ``ranked_indices(request, eligible)``, the same answer as catalogue rows
    (``retrieval.catalog_index``), and ``in_process = True`` for a source that does no I/O (it is
    then asked on the request's thread, not on the executor)."""

    name: str

    def candidates(self, request: RetrievalRequest) -> list[Candidate]: ...


@runtime_checkable
class UserEncoder(Protocol):
    """Maps a history (oldest first) to a vector whose dot product with item embeddings scores items.

    The ranker's ``encode_user(history)`` satisfies this protocol as it is.
    """

    def encode_user(self, history: tuple[str, ...]) -> np.ndarray | None: ...
