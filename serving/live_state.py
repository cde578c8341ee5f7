"""Keeps a running pipeline current: new releases from the registry, a catalogue that grows.

One background thread (``ServingApp.start_refreshing``) calls ``LiveState.refresh(full=False)``;
it is the only writer of the pipeline's state, so a release swap and a catalogue refresh never
race:

1. **Registry**: when ``lifecycle.registry`` has promoted a release newer than the one serving,
   it is loaded here, off the request path (checkpoint, vectors, content map, its Milvus
   collection loaded). A release that fails to load is logged and the current one keeps serving;
   the next refresh tries again.
2. **Catalogue**: the items of the serving index, of the content collection and of the online
   store (``serving.item_discovery``), their rows and trending scores (``serving.catalog_view``).
   Content rows the index lacks are *new items*: their text vectors are read once (and again only
   when their row changes) and mapped into the release's item space (``serving.serving_state``).
3. **Swap**: the new ``ServingState`` replaces the pipeline's in one assignment
   (``RecommendationPipeline.swap``).

**Full and incremental passes.** A full pass scans the online item keys and reads every
catalogue item's online row: about a second on ml-latest-small's 9.7k items on two busy cores
(docs/benchmarks/lifecycle.md), which delayed every new item by that much. The catalogue agent
writes each catalogue update to the content collection, which is small (new items only) and read
whole on every pass; so an incremental pass re-reads the online rows only of the items whose
content row was added, changed or removed since the last pass, and of those whose online row is
missing or older than their content row (the worker writes the two in either order), and
composes the snapshot from the previous rows plus these; one that finds nothing changed keeps
the served state (no snapshot, no new sources: nothing is rebuilt every second). For every
change that reaches the content collection it builds what a full pass would
(``tests/unit/serving/test_live_state.py``).
What it cannot see — online-only changes: popularity from interactions, items known only from
interactions, an online row written before its content row — waits for the next full pass, at
most ``full_every_s`` (10 s) later. A pass is full when asked (``refresh()``, ``build()``), when
due, on the first pass and for a new release, after a pass that failed or where a source kept
its last answer (an outage may hide changes), and always without a content collection (no
change to go by).

A source that fails (Milvus, Redis) keeps its previous answer for this refresh: the catalogue is
never emptied by an outage. Each pass and each of its steps is timed
(``aether_catalogue_refresh_seconds``, ``aether_catalogue_refresh_step_seconds{step}``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from prometheus_client import Histogram

from features.ports import OnlineFeatureReader
from features.rows import ItemFeatureRow
from lifecycle.registry import Registry
from retrieval.catalog import ItemCatalog
from retrieval.content_index import ContentIndex, ContentRow
from retrieval.index import ItemIndex
from serving.catalog_view import (
    CatalogSnapshot,
    catalogue_ids,
    changed_content,
    compose_snapshot,
    read_rows,
)
from serving.item_discovery import OnlineItemScanner
from serving.release import ServingRelease, registry_release
from serving.serving_state import (
    ReleaseView,
    RetrievalWiring,
    ServingState,
    assemble,
    release_view,
)

log = logging.getLogger(__name__)

FULL_PASS_EVERY_S = 10.0  # the longest an online-only change waits (module docstring)

_REFRESH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
REFRESH_STEPS = ("registry", "content", "scan", "rows", "compose", "view", "assemble", "swap")
REFRESH_SECONDS = Histogram(
    "aether_catalogue_refresh_seconds",
    "One refresh of the serving state (release check, catalogue, swap), wall time, by pass",
    ["pass"],  # full or incremental (module docstring)
    buckets=_REFRESH_BUCKETS,
)
REFRESH_STEP_SECONDS = Histogram(
    "aether_catalogue_refresh_step_seconds",
    "Wall time of one step of a background refresh",
    ["step"],
    buckets=_REFRESH_BUCKETS,
)
# Every series exported from the start (0 until it happens), so a scrape shows them all.
for _kind in ("full", "incremental"):
    REFRESH_SECONDS.labels(_kind)
for _step in REFRESH_STEPS:
    REFRESH_STEP_SECONDS.labels(_step)


@contextmanager
def _timed_step(step: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        REFRESH_STEP_SECONDS.labels(step=step).observe(time.perf_counter() - started)


@dataclass(frozen=True)
class CatalogueSources:
    """Where the catalogue and the releases come from; any may be missing."""

    features: OnlineFeatureReader
    registry: Registry | None = None  # None: the release is pinned (given by hand)
    index: ItemIndex | None = None  # to load a registry release's collection
    content: ContentIndex | None = None
    scanner: OnlineItemScanner | None = None


class LiveState:
    def __init__(
        self,
        sources: CatalogueSources,
        wiring: RetrievalWiring,
        release: ServingRelease,
        on_state: Callable[[ServingState], None] | None = None,
        full_every_s: float = FULL_PASS_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``on_state``: told each refreshed state (``RecommendationPipeline.swap``); settable
        later, since the pipeline is built with the first state. ``full_every_s``: the longest
        time between two full passes of ``refresh(full=False)`` (module docstring)."""
        self._sources = sources
        self._wiring = wiring
        self._release = release
        self.on_state = on_state
        self._full_every_s = full_every_s
        self._clock = clock
        self._lock = threading.Lock()
        self._view: ReleaseView | None = None
        self._mapped: frozenset[tuple[str, int]] = frozenset()  # (new item, row time) in the view
        self._text: dict[str, tuple[int, np.ndarray]] = {}  # new item -> (row event time, vector)
        self._content: dict[str, ContentRow] = {}  # the content collection, as last read
        self._online: set[str] = set()  # items with an online row: the last scan, kept up since
        self._rows: dict[str, ItemFeatureRow] = {}  # online rows of the catalogue's items
        self._rows_release: ServingRelease | None = None  # the release whose items ``_rows`` has
        self._full_at: float | None = None  # when the last full pass began; None: the next is full
        self._source_failed = False  # in this pass: a source kept its last answer
        self._last_pass = "full"  # or "incremental": the kind of the last pass
        self._snapshot = CatalogSnapshot(ItemCatalog(), {}, 0)
        self._state: ServingState | None = None  # the last built: kept while nothing changes
        self._failed_serial = 0

    @property
    def release(self) -> ServingRelease:
        return self._release

    @property
    def snapshot(self) -> CatalogSnapshot:
        """The catalogue of the state last built."""
        return self._snapshot

    def build(self) -> ServingState:
        """The state for the current release and catalogue, read in full (no swap)."""
        with self._lock:
            return self._build(full=True)

    def refresh(self, *, full: bool = True) -> ServingState:
        """Pick up a newly promoted release, re-read the catalogue, and hand the state over.
        ``full=False``: re-read only what changed, unless a full pass is due (module
        docstring)."""
        started = time.perf_counter()
        with self._lock:
            with _timed_step("registry"):
                self._check_registry()
            state = self._build(full)
            if self.on_state is not None:
                with _timed_step("swap"):
                    self.on_state(state)
        REFRESH_SECONDS.labels(self._last_pass).observe(time.perf_counter() - started)
        return state

    # -- releases ----------------------------------------------------------------------------
    def _check_registry(self) -> None:
        registry, index = self._sources.registry, self._sources.index
        if registry is None or index is None:
            return
        promoted = registry.promoted()
        if promoted is None or promoted.serial <= self._release.serial:
            return
        try:
            release = registry_release(registry, promoted, index)
        except Exception:
            if promoted.serial != self._failed_serial:  # once per release, not per refresh
                log.exception(
                    "release %s did not load; still serving %s", promoted.label, self._release.label
                )
                self._failed_serial = promoted.serial
            return
        log.info("release %d (%s) loaded; swapping it in", promoted.serial, release.label)
        self._release = release

    # -- catalogue -----------------------------------------------------------------------------
    def _build(self, full: bool) -> ServingState:
        release = self._release
        try:
            snapshot = self._read_catalogue(release, full or self._full_pass_due(release))
        except Exception:
            self._full_at = None  # whatever was half read, the next pass reads everything
            raise
        new_rows = [
            row
            for row in self._content.values()
            if release.item_vectors is None or row.item_id not in release.item_vectors
        ]
        view = self._view
        with _timed_step("view"):
            text = self._text_vectors(new_rows) if release.content_map is not None else {}
            mapped = frozenset((item, self._text[item][0]) for item in text)
            if view is None or view.release is not release or mapped != self._mapped:
                self._view = release_view(release, text)
                self._mapped = mapped
        if snapshot is None and self._view is view and self._state is not None:
            return self._state  # nothing changed: the sources over it are kept, not rebuilt
        assert self._view is not None
        self._snapshot = snapshot or self._snapshot
        with _timed_step("assemble"):
            self._state = assemble(self._view, self._snapshot, self._wiring)
        return self._state

    def _full_pass_due(self, release: ServingRelease) -> bool:
        return (
            self._sources.content is None  # no change feed: only a full pass sees anything
            or self._full_at is None
            or self._rows_release is not release
            or self._clock() - self._full_at >= self._full_every_s
        )

    def _read_catalogue(self, release: ServingRelease, full: bool) -> CatalogSnapshot | None:
        """The catalogue now; ``None`` after an incremental pass that found nothing changed."""
        features = self._sources.features
        indexed: Sequence[str] = release.item_vectors.item_ids if release.item_vectors else ()
        started = self._clock()
        self._source_failed = False
        before = self._content
        with _timed_step("content"):
            self._content = self._read_content()
        if full:
            with _timed_step("scan"):
                self._online = set(self._scan())
            ids = catalogue_ids([*indexed, *sorted(self._online)], self._content.values())
            with _timed_step("rows"):
                self._rows = read_rows(features, ids)
            self._rows_release = release
            self._full_at = started
            self._last_pass = "full"
        else:
            changed = changed_content(before, self._content) | self._awaiting_rows()
            self._last_pass = "incremental"
            if not changed and not self._source_failed:
                return None
            with _timed_step("rows"):
                fresh = read_rows(features, sorted(changed))
            self._online = (self._online - changed) | set(fresh)
            ids = catalogue_ids([*indexed, *sorted(self._online)], self._content.values())
            kept = set(ids)
            rows = {i: row for i, row in self._rows.items() if i in kept and i not in changed}
            self._rows = rows | {i: row for i, row in fresh.items() if i in kept}
        if self._source_failed:  # its last answer may hide changes: the next pass reads all
            self._full_at = None
        with _timed_step("compose"):
            return compose_snapshot(
                [*indexed, *sorted(self._online)], self._rows, list(self._content.values())
            )

    def _awaiting_rows(self) -> set[str]:
        """Content items whose online row is missing or older than their content row: the
        worker writes the two in either order, so they are read again until it caught up."""
        return {
            item
            for item, content in self._content.items()
            if (row := self._rows.get(item)) is None or row.event_time_ms < content.event_time_ms
        }

    def _read_content(self) -> dict[str, ContentRow]:
        content = self._sources.content
        if content is None:
            return {}
        try:
            return {row.item_id: row for row in content.read_all()}
        except Exception as exc:
            log.warning("content collection unreadable (%s); keeping the last read", exc)
            self._source_failed = True
            return self._content

    def _scan(self) -> list[str]:
        scanner = self._sources.scanner
        if scanner is None:
            return []
        try:
            return scanner.scan()
        except Exception as exc:
            log.warning("online item scan failed (%s); keeping the last one", exc)
            self._source_failed = True
            return sorted(self._online)

    def _text_vectors(self, rows: Sequence[ContentRow]) -> dict[str, np.ndarray]:
        """Text vectors of ``rows``, read from the content collection only for rows not read
        before (or changed since)."""
        content = self._sources.content
        stale = [
            r.item_id for r in rows if self._text.get(r.item_id, (None,))[0] != r.event_time_ms
        ]
        if stale and content is not None:
            try:
                for row in content.read(stale, vectors=True):
                    if row.vector is not None:
                        self._text[row.item_id] = (row.event_time_ms, row.vector)
            except Exception as exc:
                log.warning("new items' vectors unreadable (%s); retrying next refresh", exc)
        wanted = {r.item_id for r in rows}
        self._text = {i: v for i, v in self._text.items() if i in wanted}
        return {i: vector for i, (_, vector) in self._text.items()}
