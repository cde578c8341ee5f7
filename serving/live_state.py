"""Keeps a running pipeline current: new releases from the registry, a catalogue that grows.

One background thread (``ServingApp.start_refreshing``) calls ``LiveState.refresh()``; it is the
only writer of the pipeline's state, so a release swap and a catalogue refresh never race:

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

A source that fails (Milvus, Redis) keeps its previous answer for this refresh: the catalogue is
never emptied by an outage.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from features.ports import OnlineFeatureReader
from lifecycle.registry import Registry
from retrieval.content_index import ContentIndex, ContentRow
from retrieval.index import ItemIndex
from serving.catalog_view import load_snapshot
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
    ) -> None:
        """``on_state``: told each refreshed state (``RecommendationPipeline.swap``); settable
        later, since the pipeline is built with the first state."""
        self._sources = sources
        self._wiring = wiring
        self._release = release
        self.on_state = on_state
        self._lock = threading.Lock()
        self._view: ReleaseView | None = None
        self._mapped: frozenset[tuple[str, int]] = frozenset()  # (new item, row time) in the view
        self._text: dict[str, tuple[int, np.ndarray]] = {}  # new item -> (row event time, vector)
        self._content: list[ContentRow] = []
        self._scanned: list[str] = []
        self._failed_serial = 0

    @property
    def release(self) -> ServingRelease:
        return self._release

    def build(self) -> ServingState:
        """The state for the current release and catalogue (no swap)."""
        with self._lock:
            return self._build()

    def refresh(self) -> ServingState:
        """Pick up a newly promoted release, re-read the catalogue, and hand the state over."""
        with self._lock:
            self._check_registry()
            state = self._build()
            if self.on_state is not None:
                self.on_state(state)
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
    def _build(self) -> ServingState:
        release = self._release
        self._content = self._read_content()
        self._scanned = self._scan()
        indexed: Sequence[str] = release.item_vectors.item_ids if release.item_vectors else ()
        snapshot = load_snapshot(self._sources.features, [*indexed, *self._scanned], self._content)
        new_rows = [
            row
            for row in self._content
            if release.item_vectors is None or row.item_id not in release.item_vectors
        ]
        text = self._text_vectors(new_rows) if release.content_map is not None else {}
        mapped = frozenset((item, self._text[item][0]) for item in text)
        if self._view is None or self._view.release is not release or mapped != self._mapped:
            self._view = release_view(release, text)
            self._mapped = mapped
        return assemble(self._view, snapshot, self._wiring)

    def _read_content(self) -> list[ContentRow]:
        content = self._sources.content
        if content is None:
            return []
        try:
            return content.read_all()
        except Exception as exc:
            log.warning("content collection unreadable (%s); keeping the last read", exc)
            return self._content

    def _scan(self) -> list[str]:
        scanner = self._sources.scanner
        if scanner is None:
            return []
        try:
            return scanner.scan()
        except Exception as exc:
            log.warning("online item scan failed (%s); keeping the last one", exc)
            return self._scanned

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
