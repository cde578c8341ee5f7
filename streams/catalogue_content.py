"""The catalogue agent's content writer: each catalogue update's text, embedded, into Milvus.

``StreamRuntime.on_catalog`` hands over the catalogue updates a batch admitted; they are embedded
with the shipped content model (``retrieval.content.MiniLMTextEncoder``, whose seconds of loading
the worker starts in the background when it starts, ``preload``: the first update after a start
waits for what is left of them at most) and upserted into the content collection
(``retrieval.content_index``), where serving's next catalogue refresh finds them: an item there
but not in the serving index is a *new* item, offered by the ``content`` and ``fresh`` sources
(``serving.live_state``).

Exactly-once is not needed: ``ContentIndex.upsert`` keeps the newest row per item by event time,
so a batch written again after a crash, or an older update arriving late, changes nothing. A
Milvus outage must not stop the features: the batch is logged and counted
(``aether_stream_content_rows_total{outcome="failed"}``) and the worker goes on; the items reach
the collection with their next update or the next ``aether index``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, ExitStack

from core.errors import AetherError
from events.models import CatalogItem, to_epoch_ms
from retrieval.catalog import ItemMeta
from retrieval.content import TextEncoder
from retrieval.content_index import ContentIndex, content_rows
from streams import worker_metrics

log = logging.getLogger(__name__)


class CatalogueContent:
    def __init__(
        self,
        index: Callable[[], AbstractContextManager[ContentIndex]],
        encoder: Callable[[], TextEncoder],
        from_ms: int | None = None,
    ) -> None:
        """``index`` and ``encoder`` are built when the first update arrives (the encoder earlier
        with ``preload``): without it, a process that sees no catalogue update never loads the
        model nor opens Milvus. The index is held until ``close`` (``ContentIndex.held``: a
        Milvus Lite file stays shareable with a server).
        ``from_ms``: updates with an earlier event time are not embedded (the catalogue indexed
        in batch before it, ``settings.stream.embed_catalogue_from_ms``)."""
        self._from_ms = from_ms
        self._make_index = index
        self._make_encoder = encoder
        self._resources = ExitStack()
        self._index: ContentIndex | None = None
        self._encoder: TextEncoder | None = None
        self._encoder_lock = threading.Lock()  # one load, whichever thread asks first

    def preload(self) -> None:
        """Start loading the encoder in a background thread (a failure is logged there and the
        first update tries again)."""
        threading.Thread(
            target=self._loaded_encoder, name="content-model-load", daemon=True
        ).start()

    def _loaded_encoder(self) -> TextEncoder:
        with self._encoder_lock:
            if self._encoder is None:
                self._encoder = self._make_encoder()
            return self._encoder

    def write(self, items: Sequence[CatalogItem]) -> int:
        """Embed and upsert ``items``; the number of rows written (0 when Milvus failed)."""
        if self._from_ms is not None:
            skipped = [item for item in items if item.event_time_ms < self._from_ms]
            if skipped:
                worker_metrics.CONTENT_ROWS.labels("before_from").inc(len(skipped))
                items = [item for item in items if item.event_time_ms >= self._from_ms]
        if not items:
            return 0
        encoder = self._loaded_encoder()
        metas = [
            ItemMeta(
                item_id=item.item_id,
                title=item.title,
                categories=tuple(item.categories),
                available=item.available,
                created_time_ms=(
                    item.event_time_ms
                    if item.created_time is None
                    else to_epoch_ms(item.created_time)
                ),
            )
            for item in items
        ]
        rows = content_rows(metas, [item.event_time_ms for item in items], encoder)
        try:
            if self._index is None:
                self._index = self._resources.enter_context(self._make_index())
            written = self._index.upsert(rows)
        except AetherError as exc:
            worker_metrics.CONTENT_ROWS.labels("failed").inc(len(rows))
            log.error("content collection: %d catalogue rows not written: %s", len(rows), exc)
            return 0
        worker_metrics.CONTENT_ROWS.labels("written").inc(written)
        worker_metrics.CONTENT_ROWS.labels("unchanged").inc(len(rows) - written)
        return written

    def close(self) -> None:
        self._resources.close()
