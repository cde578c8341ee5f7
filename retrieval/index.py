"""Milvus item index: one collection per embedding version, queried through an alias.

Lifecycle (rebuild without downtime)::

    index = ItemIndex.from_settings(settings.milvus, settings.deployment)
    version = index.build_version(ids, vectors, metadata)   # new collection, inserted, indexed, loaded
    index.activate(version)                                 # atomic switch of the alias
    index.garbage_collect(keep=2)                           # drop old versions, never the active one

Collections are ``deployment.milvus_collection(f"items_v{n}")``; the alias is
``deployment.milvus_collection("items")``. Milvus Lite (a file URI) does not implement native aliases,
so the alias lives in a small registry collection (``<namespace>_aliases``, one row per alias,
upserted atomically) that both Milvus Lite and a Milvus server store the same way: one code path,
only the URI differs. On a server the native alias is mirrored too (for Attu and other tools).
Each process caches the resolved collection; ``refresh()`` re-reads it, and a query that hits a
dropped collection refreshes and retries once. The same contract tests run against Milvus Lite and
an embedded Milvus 2.3.5 server (``tests/integration/retrieval``); index types FLAT, IVF_FLAT and
AUTOINDEX work on both, HNSW on a server only.

Fields: ``item_id`` (VARCHAR pk), ``embedding`` (FLOAT_VECTOR, inner product), ``categories``
(ARRAY<VARCHAR>), ``available`` (BOOL), ``created_time_ms`` (INT64), so filters run inside Milvus.
"""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from tqdm import tqdm

from core.errors import DependencyUnavailable, NotFoundError
from core.settings import Deployment, MilvusSettings
from retrieval.index_search import MAX_TOPK, IndexSearch, PinnedCollection
from retrieval.index_types import IndexConfig, ItemRows
from retrieval.milvus_client import is_unimplemented
from retrieval.milvus_lite import connectable_uri, open_milvus_client

log = logging.getLogger(__name__)
T = TypeVar("T")

__all__ = ["MAX_TOPK", "IndexConfig", "ItemIndex", "ItemRows", "PinnedCollection"]

_VERSION_RE = re.compile(r"_v(\d+)$")


class ItemIndex(IndexSearch):
    """Versioned item collections behind one alias; all pymilvus errors leave as AetherErrors.
    The searches are ``IndexSearch``'s (``retrieval.index_search``)."""

    def __init__(
        self,
        uri: str,
        *,
        alias: str,
        token: str = "",
        config: IndexConfig | None = None,
        registry: str | None = None,
    ) -> None:
        self.uri = uri
        self.alias = alias
        self.config = config or IndexConfig()
        self.registry = registry or f"{alias.rsplit('_', 1)[0]}_aliases"
        self._lock = threading.Lock()
        self._active: str | None = None
        self._native_alias = True  # switched off the first time the server says UNIMPLEMENTED
        self._index_types: dict[str, str] = {}
        if "://" not in uri:  # Milvus Lite: a local file whose folder may not exist yet
            Path(uri).expanduser().parent.mkdir(parents=True, exist_ok=True)
        try:
            self._client = open_milvus_client(uri, token=token, timeout_s=self.config.timeout_s)
        except Exception as exc:  # connection refused, bad URI, Lite failing to start
            raise DependencyUnavailable("milvus", f"cannot connect to {uri}: {exc}") from exc
        try:
            self._ensure_registry()
            self.refresh()
        except Exception:
            self.close()  # do not leave a Milvus Lite server process behind
            raise

    @classmethod
    def from_settings(
        cls, milvus: MilvusSettings, deployment: Deployment, config: IndexConfig | None = None
    ) -> ItemIndex:
        """The deployment's item index on the Milvus that ``milvus`` points at (a Milvus Lite
        file another process holds is reached through that process, ``connectable_uri``)."""
        return cls(
            connectable_uri(milvus.uri),
            token=milvus.token.get_secret_value(),
            alias=deployment.milvus_collection("items"),
            config=config,
            registry=deployment.milvus_collection("aliases"),
        )

    @property
    def client(self) -> Any:
        """The open ``MilvusClient`` (to share with ``retrieval.content_index.ContentIndex``)."""
        return self._client

    def close(self) -> None:
        """Close the client; with Milvus Lite this also stops its local server process."""
        try:
            self._client.close()
        except Exception as exc:  # closing twice, or a server already gone
            log.debug("closing milvus client: %s", exc)

    def __enter__(self) -> ItemIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- names ----------------------------------------------------------------------------------
    def collection_name(self, version: int) -> str:
        return f"{self.alias}_v{version}"

    def version_of(self, collection: str) -> int | None:
        """The version number of one of this alias's collections (None for any other name)."""
        match = _VERSION_RE.search(collection)
        if match and collection == self.collection_name(int(match[1])):
            return int(match[1])
        return None

    def versions(self) -> list[int]:
        """Versions present in Milvus (built or being built), ascending."""
        names = self._call("list_collections", self._client.list_collections)
        prefix = f"{self.alias}_v"
        found = []
        for name in names:
            match = _VERSION_RE.search(name)
            if name.startswith(prefix) and match and name == self.collection_name(int(match[1])):
                found.append(int(match[1]))
        return sorted(found)

    def next_version(self) -> int:
        existing = self.versions()
        return (existing[-1] + 1) if existing else 1

    # -- alias registry -------------------------------------------------------------------------
    def _ensure_registry(self) -> None:
        from pymilvus import DataType, MilvusClient

        if self._call("has_collection", self._client.has_collection, self.registry):
            return
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("alias", DataType.VARCHAR, is_primary=True, max_length=255)
        schema.add_field("target", DataType.VARCHAR, max_length=255)
        schema.add_field("version", DataType.INT64)
        schema.add_field("unused", DataType.FLOAT_VECTOR, dim=2)  # Milvus needs one vector field
        params = self._client.prepare_index_params()
        params.add_index(field_name="unused", index_type="FLAT", metric_type="L2")
        self._call(
            "create registry",
            self._client.create_collection,
            self.registry,
            schema=schema,
            index_params=params,
            consistency_level="Strong",
        )

    def refresh(self) -> str | None:
        """Re-read which collection the alias points at (another process may have switched it)."""
        rows = self._call(
            "read alias",
            self._client.query,
            self.registry,
            ids=[self.alias],
            output_fields=["target"],
            consistency_level="Strong",
        )
        with self._lock:
            self._active = rows[0]["target"] if rows else None
        return self._active

    @property
    def active_collection(self) -> str | None:
        return self._active

    @property
    def active_version(self) -> int | None:
        if self._active is None:
            return None
        match = _VERSION_RE.search(self._active)
        return int(match[1]) if match else None

    def activate(self, version: int) -> None:
        """Point the alias at ``version`` (already built and loaded) in one atomic row upsert."""
        target = self.collection_name(version)
        if not self._call("has_collection", self._client.has_collection, target):
            raise NotFoundError(f"milvus collection {target} does not exist; build it first")
        self._call("load", self._client.load_collection, target)
        row = {"alias": self.alias, "target": target, "version": version, "unused": [0.0, 0.0]}
        self._call("switch alias", self._client.upsert, self.registry, [row])
        with self._lock:
            self._active = target
        self._mirror_native_alias(target)
        log.info("alias %s -> %s", self.alias, target)

    def _mirror_native_alias(self, target: str) -> None:
        if not self._native_alias:
            return
        # pymilvus logs every failed RPC at ERROR; the expected UNIMPLEMENTED on Lite is not one.
        rpc_log = logging.getLogger("pymilvus.decorators")
        level = rpc_log.level
        rpc_log.setLevel(logging.CRITICAL)
        try:
            try:
                self._client.alter_alias(target, self.alias, timeout=self.config.timeout_s)
            except Exception as exc:
                if is_unimplemented(exc):
                    raise
                self._client.create_alias(target, self.alias, timeout=self.config.timeout_s)
        except Exception as exc:
            # The registry row above is the source of truth either way. Milvus Lite answers
            # UNIMPLEMENTED: stop asking. Anything else (a server timing out) is retried on the
            # next switch, because a server (2.4+) refuses to drop a collection that still holds
            # an alias, and garbage_collect would then fail on the version left behind.
            if is_unimplemented(exc):
                self._native_alias = False
                log.debug("native aliases unsupported (%s); using the registry only", exc)
            else:
                log.warning("native alias %s not moved to %s: %s", self.alias, target, exc)
        finally:
            rpc_log.setLevel(level)

    # -- building -------------------------------------------------------------------------------
    def build_version(
        self, rows: ItemRows, version: int | None = None, *, progress: bool = True
    ) -> int:
        """Create ``items_v<version>``, insert ``rows``, build the ANN index and load it."""
        from pymilvus import DataType, MilvusClient

        version = self.next_version() if version is None else version
        name = self.collection_name(version)
        if self._call("has_collection", self._client.has_collection, name):
            raise DependencyUnavailable("milvus", f"collection {name} already exists")
        dim = int(rows.vectors.shape[1])
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("item_id", DataType.VARCHAR, is_primary=True, max_length=256)
        schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=dim)
        schema.add_field(
            "categories",
            DataType.ARRAY,
            element_type=DataType.VARCHAR,
            max_capacity=self.config.max_categories,
            max_length=128,
        )
        schema.add_field("available", DataType.BOOL)
        schema.add_field("created_time_ms", DataType.INT64)
        self._call("create collection", self._client.create_collection, name, schema=schema)
        self._insert(name, rows, progress=progress)
        self._call("flush", self._client.flush, name)
        index_type = self.config.resolve_index_type(len(rows.item_ids))
        params = self._client.prepare_index_params()
        params.add_index(
            field_name="embedding",
            index_type=index_type,
            metric_type="IP",
            params=self._index_params(index_type, len(rows.item_ids)),
        )
        self._call("create index", self._client.create_index, name, params)
        self._call("load", self._client.load_collection, name)
        self._index_types[name] = index_type
        return version

    def _index_params(self, index_type: str, n: int) -> dict[str, int]:
        if index_type == "HNSW":
            return {"M": self.config.hnsw_m, "efConstruction": self.config.hnsw_ef_construction}
        if index_type != "IVF_FLAT":
            return {}
        nlist = self.config.nlist or int(min(1024, max(16, 4 * np.sqrt(max(n, 1)))))
        return {"nlist": nlist}

    def _insert(self, name: str, rows: ItemRows, *, progress: bool) -> None:
        vectors = np.ascontiguousarray(rows.vectors, dtype=np.float32)
        n = len(rows.item_ids)
        step = self.config.insert_batch
        for start in tqdm(
            range(0, n, step), desc=f"insert {name}", disable=not progress or n <= step
        ):
            stop = min(n, start + step)
            batch = [
                {
                    "item_id": str(rows.item_ids[i]),
                    "embedding": vectors[i].tolist(),
                    "categories": list(rows.categories[i])[: self.config.max_categories]
                    if rows.categories is not None
                    else [],
                    "available": bool(rows.available[i]) if rows.available is not None else True,
                    "created_time_ms": int(rows.created_time_ms[i])
                    if rows.created_time_ms is not None
                    else 0,
                }
                for i in range(start, stop)
            ]
            self._call("insert", self._client.insert, name, batch)

    def publish(self, rows: ItemRows, *, progress: bool = True) -> int:
        """Build a new version, switch the alias to it, and garbage-collect old versions."""
        version = self.build_version(rows, progress=progress)
        self.activate(version)
        self.garbage_collect()
        return version

    def garbage_collect(
        self, keep: int | None = None, protected: frozenset[int] | set[int] = frozenset()
    ) -> list[int]:
        """Drop all but the newest ``keep`` versions; the active version and the ``protected``
        ones (e.g. what the registry may still serve, ``lifecycle``) are never dropped."""
        keep = self.config.keep_versions if keep is None else keep
        active = self.active_version
        versions = self.versions()
        retained = set(versions[-keep:]) if keep > 0 else set()
        dropped = []
        for version in versions:
            if version in retained or version == active or version in protected:
                continue
            self._call("drop", self._client.drop_collection, self.collection_name(version))
            dropped.append(version)
        return dropped

    # -- querying (the searches themselves: ``retrieval.index_search``) ---------------------------
    def has_collection(self, collection: str) -> bool:
        return bool(self._call("has_collection", self._client.has_collection, collection))

    def load(self, collection: str) -> None:
        """Make sure ``collection`` is loaded (searchable); NotFoundError if it does not exist."""
        if not self.has_collection(collection):
            raise NotFoundError(f"milvus collection {collection} does not exist")
        self._call("load", self._client.load_collection, collection)

    def pinned(self, collection: str) -> PinnedCollection:
        """A searcher of ``collection`` alone, unmoved by later alias switches."""
        return PinnedCollection(self, collection)
