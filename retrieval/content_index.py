"""The content collection: every catalogue item's text embedding, in Milvus, one row per item.

Written by the stream (the catalogue agent embeds each item of ``<ns>.items`` with
``content_rows`` and calls ``ContentIndex.upsert``), read by serving (``serving.catalog_view``):
an item present here but absent from the serving index is a *new* item, mapped into the item
space through the index's content map (``retrieval.content.RidgeMap``) and offered by the
``content`` and ``fresh`` sources without a rebuild or a restart.

Collection ``<namespace>_content`` (``Deployment.milvus_collection("content")``), fields:
``item_id`` (VARCHAR pk), ``text_embedding`` (FLOAT_VECTOR, all-MiniLM-L6-v2, 384-d, inner
product on unit vectors), ``title``, ``categories`` (ARRAY<VARCHAR>), ``available`` (BOOL),
``created_time_ms`` and ``event_time_ms`` (INT64: the catalogue event that wrote the row).
``upsert`` keeps the newest row per item by ``(event_time_ms, …)``: a redelivered or older
catalogue event changes nothing (docs/architecture.md, event-time rules 1 and 2).

Text of an item: ``retrieval.content.item_text`` (title, then categories), the same function
the index's content map was fitted with.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from core.errors import DependencyUnavailable, NotFoundError
from core.settings import Deployment, MilvusSettings
from retrieval.catalog import ItemMeta
from retrieval.content import TextEncoder, item_text
from retrieval.milvus_client import is_not_found
from retrieval.milvus_lite import connectable_uri, hold_milvus_lite, open_milvus_client

log = logging.getLogger(__name__)
T = TypeVar("T")

TEXT_DIM = 384  # all-MiniLM-L6-v2
_META_FIELDS = ["item_id", "title", "categories", "available", "created_time_ms", "event_time_ms"]
_BATCH = 1000  # rows per upsert: far larger batches slowed Milvus Lite 2.5.1 down sharply


@dataclass(frozen=True, slots=True)
class ContentRow:
    """One catalogue item as the content collection holds it (``vector`` may be left out on
    reads that only need the metadata)."""

    item_id: str
    title: str = ""
    categories: tuple[str, ...] = ()
    available: bool = True
    created_time_ms: int = 0
    event_time_ms: int = 0
    vector: np.ndarray | None = field(default=None, compare=False)

    @property
    def meta(self) -> ItemMeta:
        return ItemMeta(
            item_id=self.item_id,
            title=self.title,
            categories=self.categories,
            available=self.available,
            created_time_ms=self.created_time_ms,
        )


def content_rows(
    items: Sequence[ItemMeta], event_times_ms: Sequence[int], encoder: TextEncoder
) -> list[ContentRow]:
    """The rows of ``items`` (catalogue updates at ``event_times_ms``), text embedded by
    ``encoder`` (``retrieval.content.MiniLMTextEncoder`` in production)."""
    if len(items) != len(event_times_ms):
        raise ValueError("one event time per item")
    if not items:
        return []
    vectors = encoder.encode([item_text(meta) for meta in items])
    return [
        ContentRow(
            item_id=meta.item_id,
            title=meta.title,
            categories=tuple(meta.categories),
            available=meta.available,
            created_time_ms=meta.created_time_ms,
            event_time_ms=int(at),
            vector=np.asarray(vector, dtype=np.float32),
        )
        for meta, at, vector in zip(items, event_times_ms, vectors, strict=True)
    ]


class ContentIndex:
    """The deployment's content collection on one Milvus (``from_settings``)."""

    def __init__(
        self,
        uri: str,
        *,
        collection: str,
        token: str = "",
        dim: int = TEXT_DIM,
        timeout_s: float = 30.0,
        client: Any = None,
    ) -> None:
        """``client``: an open ``MilvusClient`` to share (e.g. the item index's), else one is
        opened on ``uri`` and closed with this object."""
        self.collection = collection
        self.dim = dim
        self.timeout_s = timeout_s
        self._owns_client = client is None
        if client is None:
            try:
                client = open_milvus_client(uri, token=token, timeout_s=timeout_s)
            except Exception as exc:
                raise DependencyUnavailable("milvus", f"cannot connect to {uri}: {exc}") from exc
        self._client = client

    @classmethod
    def from_settings(
        cls, milvus: MilvusSettings, deployment: Deployment, *, client: Any = None
    ) -> ContentIndex:
        return cls(
            connectable_uri(milvus.uri) if client is None else milvus.uri,
            collection=deployment.milvus_collection("content"),
            token=milvus.token.get_secret_value(),
            client=client,
        )

    @classmethod
    @contextlib.contextmanager
    def held(cls, milvus: MilvusSettings, deployment: Deployment) -> Iterator[ContentIndex]:
        """For a long-lived process: the content collection, holding a Milvus Lite file (and
        sharing its socket with other processes, ``retrieval.milvus_lite.hold_milvus_lite``)
        while the block runs, so that a server started later can still open it."""
        with hold_milvus_lite(milvus.uri) as uri:
            index = cls(
                uri,
                collection=deployment.milvus_collection("content"),
                token=milvus.token.get_secret_value(),
            )
            try:
                yield index
            finally:
                index.close()

    def close(self) -> None:
        if self._owns_client:
            try:
                self._client.close()
            except Exception as exc:  # closing twice, or a server already gone
                log.debug("closing milvus client: %s", exc)

    def __enter__(self) -> ContentIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        kwargs.setdefault("timeout", self.timeout_s)
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if is_not_found(exc):
                raise NotFoundError(f"milvus {what}: {exc}") from exc
            raise DependencyUnavailable("milvus", f"{what} failed: {exc}") from exc

    def exists(self) -> bool:
        return bool(self._call("has_collection", self._client.has_collection, self.collection))

    def drop(self) -> None:
        """Remove the collection and every row in it (idempotent)."""
        if self.exists():
            self._call("drop", self._client.drop_collection, self.collection)

    def ensure(self) -> None:
        """Create and load the collection if it does not exist (idempotent)."""
        if self.exists():
            return
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("item_id", DataType.VARCHAR, is_primary=True, max_length=256)
        schema.add_field("text_embedding", DataType.FLOAT_VECTOR, dim=self.dim)
        schema.add_field("title", DataType.VARCHAR, max_length=1024)
        schema.add_field(
            "categories",
            DataType.ARRAY,
            element_type=DataType.VARCHAR,
            max_capacity=64,
            max_length=128,
        )
        schema.add_field("available", DataType.BOOL)
        schema.add_field("created_time_ms", DataType.INT64)
        schema.add_field("event_time_ms", DataType.INT64)
        params = self._client.prepare_index_params()
        params.add_index(field_name="text_embedding", index_type="FLAT", metric_type="IP")
        self._call(
            "create content collection",
            self._client.create_collection,
            self.collection,
            schema=schema,
            index_params=params,
            consistency_level="Strong",
        )

    def upsert(self, rows: Sequence[ContentRow]) -> int:
        """Write ``rows`` (each with its ``vector``), keeping per item the row with the greatest
        ``(event_time_ms, title, …)``; returns how many rows were written."""
        self.ensure()
        newest: dict[str, ContentRow] = {}
        for row in rows:
            if row.vector is None:
                raise ValueError(f"content row {row.item_id!r} has no vector")
            current = newest.get(row.item_id)
            if current is None or _order(row) > _order(current):
                newest[row.item_id] = row
        stored = {r.item_id: r for r in self.read(list(newest))}
        fresh = [
            row
            for item_id, row in newest.items()
            if item_id not in stored or _order(row) > _order(stored[item_id])
        ]
        for start in range(0, len(fresh), _BATCH):
            self._call(
                "upsert content rows",
                self._client.upsert,
                self.collection,
                [_record(row) for row in fresh[start : start + _BATCH]],
            )
        return len(fresh)

    def read(self, item_ids: Sequence[str], *, vectors: bool = False) -> list[ContentRow]:
        """The rows of ``item_ids`` that exist (with their vectors when asked)."""
        if not item_ids or not self.exists():
            return []
        fields = [*_META_FIELDS, "text_embedding"] if vectors else _META_FIELDS
        found: list[ContentRow] = []
        ids = list(item_ids)
        for start in range(0, len(ids), _BATCH):
            records = self._call(
                "read content rows",
                self._client.query,
                self.collection,
                ids=ids[start : start + _BATCH],
                output_fields=fields,
            )
            found.extend(_row(record) for record in records)
        return found

    def read_all(self, batch_size: int = 5000) -> list[ContentRow]:
        """Every row's metadata (no vectors): what serving refreshes its catalogue with."""
        if not self.exists():
            return []
        iterator = self._call(
            "iterate content rows",
            self._client.query_iterator,
            self.collection,
            batch_size=batch_size,
            filter="",
            output_fields=_META_FIELDS,
        )
        rows: list[ContentRow] = []
        try:
            while batch := iterator.next():
                rows.extend(_row(record) for record in batch)
        except Exception as exc:
            raise DependencyUnavailable("milvus", f"iterate content rows failed: {exc}") from exc
        finally:
            iterator.close()
        return rows


def _order(row: ContentRow) -> tuple[int, str, tuple[str, ...], bool, int]:
    """Newest wins; ties (one event time) resolved by the row's content, so any arrival order of
    the same rows leaves the same winner."""
    return (row.event_time_ms, row.title, row.categories, row.available, row.created_time_ms)


def _record(row: ContentRow) -> dict[str, Any]:
    assert row.vector is not None
    return {
        "item_id": row.item_id,
        "text_embedding": np.asarray(row.vector, dtype=np.float32).tolist(),
        "title": row.title[:1024],
        "categories": list(row.categories)[:64],
        "available": bool(row.available),
        "created_time_ms": int(row.created_time_ms),
        "event_time_ms": int(row.event_time_ms),
    }


def _row(record: dict[str, Any]) -> ContentRow:
    vector = record.get("text_embedding")
    return ContentRow(
        item_id=str(record["item_id"]),
        title=str(record.get("title") or ""),
        categories=tuple(record.get("categories") or ()),
        available=bool(record.get("available", True)),
        created_time_ms=int(record.get("created_time_ms") or 0),
        event_time_ms=int(record.get("event_time_ms") or 0),
        vector=None if vector is None else np.asarray(vector, dtype=np.float32),
    )
