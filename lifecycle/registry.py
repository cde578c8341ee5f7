"""The model and index registry: what was trained and indexed, and which pair serves.

Storage decision (docs/lifecycle.md): a folder with a JSON manifest,
``<data_dir>/registry/<namespace>/``, not PostgreSQL. Every process of a deployment already shares
the data folder (one machine in the embedded default; the ``aether-data`` volume in
docker-compose), the artifacts (checkpoints, item embeddings) are files anyway, and the
embedded default then needs no database server. Layout::

    registry.json                      the manifest (format below), replaced atomically
    registry.lock                      writers take it (fcntl), readers never wait
    models/<model_version>.pt          registered ranker checkpoints (copies)
    indexes/<index_version>/item_embeddings.npz   ids + vectors (+ the ranker's model_version)
    indexes/<index_version>/content_map.npz       text → item-space ridge weights (optional)

Manifest (``format`` = ``aetherrec.registry.v1``): ``models`` and ``indexes`` by version, and
``releases``, the promotions in order; the last one is the pair that serves. A release names one
model (or none: retrieval order) and one index, and its ``label`` (``<model>@<index>``) is what
every response's ``model_version`` says, so a response names the one pair that produced it.

Writers (``register_*``, ``promote``) hold the lock across read-modify-write and replace the
manifest with ``os.replace``; a reader sees the old or the new manifest, never half of one. A
watcher polls ``promoted()`` (one small file read); the release ``serial`` only grows.

Wall-clock times here (``registered_ms``, ``promoted_ms``) are bookkeeping for people, never a
feature, a label or an order: two writes can fall in one millisecond. Order comes from serials
kept under the lock: each model and index version's ``serial`` (its registration order among its
kind, from 1; 0 for versions registered before serials existed), and each release's
``index_serial``, the last index serial registered when it was promoted.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import ConfigError, NotFoundError, SchemaError
from core.settings import Deployment
from retrieval.embeddings import save_embeddings

FORMAT = "aetherrec.registry.v1"
MANIFEST = "registry.json"
NO_MODEL = "retrieval-only"  # the label's model part when a release has no ranker


def registry_dir(deployment: Deployment) -> Path:
    """Where the deployment's registry lives: ``<data_dir>/registry/<namespace>``."""
    return deployment.data_dir.resolve() / "registry" / deployment.namespace


@dataclass(frozen=True)
class ModelVersion:
    version: str  # the checkpoint's model_version (a content hash of weights and vocabulary)
    path: str  # the registered copy, relative to the registry folder
    registered_ms: int
    metadata: dict[str, Any] = field(default_factory=dict)  # training figures, data it saw
    serial: int = 0  # registration order among the models (module docstring)


@dataclass(frozen=True)
class IndexVersion:
    version: str  # e.g. "items_v3": the Milvus collection's name without the namespace
    collection: str  # the Milvus collection this version's vectors live in
    embeddings: str  # relative path of the ``.npz`` (``retrieval.embeddings`` format)
    item_count: int
    dim: int
    embedding_model_version: str | None  # the ranker whose own item embeddings these are
    source: str  # where the vectors came from, for people
    registered_ms: int
    content_map: str | None = None  # relative path of the text → item-space map, if fitted
    dropped: bool = False  # its Milvus collection was garbage-collected
    serial: int = 0  # registration order among the indexes (module docstring)


@dataclass(frozen=True)
class Release:
    """One promoted (model, index) pair."""

    serial: int
    model: str | None
    index: str
    promoted_ms: int
    index_serial: int | None = None  # the last index serial registered then (None: older release)

    @property
    def label(self) -> str:
        """What a response's ``model_version`` says: ``<model>@<index>``."""
        return f"{self.model or NO_MODEL}@{self.index}"


@dataclass(frozen=True)
class Manifest:
    models: dict[str, ModelVersion] = field(default_factory=dict)
    indexes: dict[str, IndexVersion] = field(default_factory=dict)
    releases: tuple[Release, ...] = ()

    @property
    def promoted(self) -> Release | None:
        return self.releases[-1] if self.releases else None

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "models": {v: asdict(m) for v, m in self.models.items()},
            "indexes": {v: asdict(i) for v, i in self.indexes.items()},
            "releases": [asdict(r) for r in self.releases],
        }

    @classmethod
    def from_json(cls, body: Mapping[str, Any], where: Path) -> Manifest:
        if body.get("format") != FORMAT:
            raise SchemaError(f"{where}: not a registry manifest ({body.get('format')!r})")
        try:
            return cls(
                models={v: ModelVersion(**m) for v, m in body.get("models", {}).items()},
                indexes={v: IndexVersion(**i) for v, i in body.get("indexes", {}).items()},
                releases=tuple(Release(**r) for r in body.get("releases", [])),
            )
        except TypeError as exc:
            raise SchemaError(f"{where}: malformed registry manifest: {exc}") from exc


def registration_order(entry: ModelVersion | IndexVersion) -> tuple[int, int]:
    """Sort key: the order versions of one kind were registered in (serial, then the time for
    versions from before serials)."""
    return entry.serial, entry.registered_ms


def _last_serial(entries: Iterable[ModelVersion | IndexVersion]) -> int:
    """The highest registration serial among ``entries`` (0: none, or none with a serial)."""
    return max((entry.serial for entry in entries), default=0)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000  # bookkeeping only (module docstring)


class Registry:
    """The registry folder of one deployment (``Registry.for_deployment``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @classmethod
    def for_deployment(cls, deployment: Deployment) -> Registry:
        return cls(registry_dir(deployment))

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    # -- reading ---------------------------------------------------------------------------------
    def read(self) -> Manifest:
        """The manifest now (an empty one before anything was registered)."""
        try:
            text = self.manifest_path.read_text()
        except FileNotFoundError:
            return Manifest()
        try:
            body = json.loads(text)
        except ValueError as exc:
            raise SchemaError(f"{self.manifest_path}: not JSON: {exc}") from exc
        return Manifest.from_json(body, self.manifest_path)

    def promoted(self) -> Release | None:
        return self.read().promoted

    def model(self, version: str) -> ModelVersion:
        found = self.read().models.get(version)
        if found is None:
            raise NotFoundError(f"model {version!r} is not registered in {self.root}")
        return found

    def index(self, version: str) -> IndexVersion:
        found = self.read().indexes.get(version)
        if found is None:
            raise NotFoundError(f"index {version!r} is not registered in {self.root}")
        return found

    def path(self, relative: str) -> Path:
        """An artifact's absolute path (entries store paths relative to the registry folder)."""
        return self.root / relative

    # -- writing ---------------------------------------------------------------------------------
    def register_model(
        self, checkpoint: Path, model_version: str, metadata: Mapping[str, Any] | None = None
    ) -> ModelVersion:
        """Copy ``checkpoint`` into the registry under its ``model_version``. Registering the same
        version again keeps the first copy and returns its entry (versions are content hashes)."""
        checkpoint = Path(checkpoint)
        if not checkpoint.is_file():
            raise NotFoundError(f"checkpoint {checkpoint} not found")
        with self._locked() as manifest:
            existing = manifest.models.get(model_version)
            if existing is not None:
                return existing
            relative = f"models/{model_version}.pt"
            _copy_atomically(checkpoint, self.path(relative))
            entry = ModelVersion(
                model_version,
                relative,
                _now_ms(),
                _json_safe(metadata or {}),
                serial=_last_serial(manifest.models.values()) + 1,
            )
            self._write(
                Manifest(
                    {**manifest.models, model_version: entry}, manifest.indexes, manifest.releases
                )
            )
            return entry

    def register_index(
        self,
        *,
        version: str,
        collection: str,
        item_ids: Sequence[str],
        matrix: np.ndarray,
        embedding_model_version: str | None,
        source: str,
        content_map: np.ndarray | None = None,
    ) -> IndexVersion:
        """Record an index version whose vectors are already in Milvus ``collection``; the ids and
        vectors are kept here too (serving explains and scores with them). ``content_map``: the
        ``(text_dim + 1, dim)`` ridge weights that map text embeddings into this space."""
        if matrix.ndim != 2 or matrix.shape[0] != len(item_ids):
            raise SchemaError(f"matrix {matrix.shape} does not match {len(item_ids)} item ids")
        with self._locked() as manifest:
            if version in manifest.indexes:
                raise ConfigError(f"index {version!r} is already registered in {self.root}")
            folder = f"indexes/{version}"
            embeddings = f"{folder}/item_embeddings.npz"
            save_embeddings(
                self.path(embeddings), item_ids, matrix, model_version=embedding_model_version
            )
            map_path = None
            if content_map is not None:
                map_path = f"{folder}/content_map.npz"
                np.savez(self.path(map_path), weights=np.asarray(content_map, dtype=np.float64))
            entry = IndexVersion(
                version=version,
                collection=collection,
                embeddings=embeddings,
                item_count=len(item_ids),
                dim=int(matrix.shape[1]),
                embedding_model_version=embedding_model_version,
                source=source,
                registered_ms=_now_ms(),
                content_map=map_path,
                serial=_last_serial(manifest.indexes.values()) + 1,
            )
            self._write(
                Manifest(manifest.models, {**manifest.indexes, version: entry}, manifest.releases)
            )
            return entry

    def promote(self, *, model: str | None, index: str) -> Release:
        """Make (``model``, ``index``) the serving pair; both must be registered (``model=None``:
        no ranker, retrieval order). Serving processes watching the registry swap to it."""
        with self._locked() as manifest:
            if model is not None and model not in manifest.models:
                raise NotFoundError(f"model {model!r} is not registered in {self.root}")
            entry = manifest.indexes.get(index)
            if entry is None:
                raise NotFoundError(f"index {index!r} is not registered in {self.root}")
            if entry.dropped:
                raise NotFoundError(f"index {index!r} was garbage-collected from Milvus")
            serial = manifest.promoted.serial + 1 if manifest.promoted else 1
            last_index = _last_serial(manifest.indexes.values())
            release = Release(serial, model, index, _now_ms(), index_serial=last_index)
            self._write(Manifest(manifest.models, manifest.indexes, (*manifest.releases, release)))
            return release

    def mark_dropped(self, versions: Sequence[str]) -> None:
        """Record that these index versions' collections no longer exist."""
        if not versions:
            return
        with self._locked() as manifest:
            indexes = dict(manifest.indexes)
            for version in versions:
                if version in indexes:
                    indexes[version] = _replace(indexes[version], dropped=True)
            self._write(Manifest(manifest.models, indexes, manifest.releases))

    def protected_indexes(self, keep_releases: int = 1) -> set[str]:
        """Index versions that must stay in Milvus: those of the last ``keep_releases`` releases
        and every version registered after the last promotion (a candidate someone may promote
        next)."""
        manifest = self.read()
        recent = manifest.releases[-keep_releases:] if keep_releases > 0 else ()
        protected = {release.index for release in recent}
        promoted = manifest.promoted

        def registered_since(entry: IndexVersion) -> bool:
            if promoted is None:
                return True
            if promoted.index_serial is None:  # a release from before serials: by the times
                return entry.registered_ms >= promoted.promoted_ms
            return entry.serial > promoted.index_serial

        return protected | {v for v, i in manifest.indexes.items() if registered_since(i)}

    # -- plumbing ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[Manifest]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "registry.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield self.read()
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _write(self, manifest: Manifest) -> None:
        tmp = self.manifest_path.with_name(f".{MANIFEST}.{uuid.uuid4().hex}.tmp")
        body = json.dumps(_json_safe(manifest.to_json()), indent=2, sort_keys=True, allow_nan=False)
        tmp.write_text(body + "\n")
        os.replace(tmp, self.manifest_path)


def _json_safe(value: Any) -> Any:
    """``value`` with NaN and infinities as None: the manifest stays standard JSON (training
    figures are NaN when a run had no validation)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _replace(entry: IndexVersion, **changes: Any) -> IndexVersion:
    return IndexVersion(**{**asdict(entry), **changes})


def _copy_atomically(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)
