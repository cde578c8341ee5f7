"""The Feast feature store of one deployment, and the online store adapter behind the ports.

Each takes the Redis settings section and the deployment (``settings.redis, settings.deployment``).

* ``feature_store(redis_settings, deployment)`` builds a ``feast.FeatureStore`` from a programmatic
  ``RepoConfig``: project = ``deployment.feast_project`` (the namespace), a file registry under
  ``<data_dir>/feast/<namespace>/``, the Redis online store at ``redis_settings.url`` and the file
  (parquet) offline store. No ``feature_store.yaml`` is needed.
* ``apply_repo(redis_settings, deployment)`` is ``feast apply`` for our definitions; idempotent
  (``aether stack up``).
* ``FeastOnlineStore(redis_settings, deployment)`` implements ``OnlineFeatureWriter`` and
  ``OnlineFeatureReader``.
  Writes: one round trip per batch, an atomic newer-wins compare-and-set per row in Feast's own
  Redis layout (why not ``write_to_online_store``: see ``features.redis_layout``).
  Reads: ``read_path="redis"`` (default) fetches Feast's hashes in one round trip (one read-only
  script call returning every entity's fields);
  ``read_path="feast"`` calls ``FeatureStore.get_online_features`` once per batch. Both return
  identical rows (``tests/integration/features/test_contract.py``); ``benchmarks/feature_store.py`` measures
  both, which is why the direct path is the default for serving.
  On a Redis Cluster (``RedisSettings.cluster``) a script may only touch keys of one slot and
  Feast's keys carry no hash tag: writes run the compare-and-set once per slot and reads one
  ``HMGET`` per row, each batch in one cluster pipeline (``features.redis_client``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from functools import partial
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast
from urllib.parse import parse_qs, unquote, urlsplit

import redis

from core.errors import ConfigError, DependencyUnavailable
from core.settings import Deployment, RedisSettings
from features.redis_client import (
    RedisClient,
    is_cluster,
    positions_by_slot,
    redis_client,
    registered_script,
    scripts_by_slot,
)
from features.redis_layout import (
    BATCH_READ_SCRIPT,
    CAS_ROWS_SCRIPT,
    ENTITY_KEY_SERIALIZATION_VERSION,
    FeastRedisLayout,
)
from features.rows import ItemFeatureRow, UserFeatureRow
from features.schema import (
    ITEM_FEATURE_TYPES,
    ITEM_FEATURES,
    ITEM_JOIN_KEY,
    ITEM_VIEW,
    USER_FEATURE_TYPES,
    USER_FEATURES,
    USER_JOIN_KEY,
    USER_VIEW,
    item_record_to_row,
    item_row_to_record,
    user_record_to_row,
    user_row_to_record,
)

# Feast is imported inside the functions that call it, never at module level: importing it costs
# seconds of CPU, and the worker and the server (which read and write through ``FeastRedisLayout``)
# never need it. ``tests/unit/features/test_lazy_imports.py`` keeps it that way.
if TYPE_CHECKING:
    from feast import FeatureStore, RepoConfig

    from features.repo.definitions import FeatureRepo

ReadPath = Literal["redis", "feast"]
_T = TypeVar("_T")
_Row = TypeVar("_Row", UserFeatureRow, ItemFeatureRow)
_ITEM_MEMO_SIZE = 200_000  # decoded item rows kept (≈ catalogue size); cleared when full


# -- configuration ------------------------------------------------------------------------------
def feast_dir(deployment: Deployment) -> Path:
    return deployment.data_dir.resolve() / "feast" / deployment.namespace


def feature_history_dir(deployment: Deployment) -> Path:
    """Parquet feature history (``features.offline``), the offline source of both views."""
    return deployment.data_dir.resolve() / "offline" / deployment.namespace / "features"


def redis_connection_string(url: str, *, cluster: bool = False) -> str:
    """``redis://[user:password@]host:port/db`` → Feast's ``host:port,db=N[,password=…]``.

    For a cluster (``cluster=True``) the node's ``host:port`` without ``db`` (a cluster has only
    database 0, and Feast's cluster client refuses the option)."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ConfigError(
            f"Feast's online store needs a redis:// or rediss:// URL, got {parts.scheme!r}"
        )
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 6379
    db = parts.path.lstrip("/") or parse_qs(parts.query).get("db", ["0"])[0]
    if not db.isdigit():
        raise ConfigError(f"Redis URL database must be a number, got {db!r}")
    if cluster and int(db) != 0:
        raise ConfigError(f"a Redis Cluster has only database 0, the URL names {db}")
    options = [f"{host}:{port}"] if cluster else [f"{host}:{port}", f"db={int(db)}"]
    if parts.username:
        options.append(f"username={unquote(parts.username)}")
    if parts.password:
        options.append(f"password={unquote(parts.password)}")
    if parts.scheme == "rediss":
        options.append("ssl=true")
    return ",".join(options)


def repo_config(redis_settings: RedisSettings, deployment: Deployment) -> RepoConfig:
    from feast import RepoConfig
    from feast.repo_config import RegistryConfig

    registry = feast_dir(deployment) / "registry.db"
    return RepoConfig(
        project=deployment.feast_project,
        provider="local",
        registry=RegistryConfig(path=str(registry), cache_ttl_seconds=60),
        online_store={
            "type": "redis",
            "redis_type": "redis_cluster" if redis_settings.cluster else "redis",
            "connection_string": redis_connection_string(
                redis_settings.url.get_secret_value(), cluster=redis_settings.cluster
            ),
        },
        offline_store={"type": "file"},
        entity_key_serialization_version=ENTITY_KEY_SERIALIZATION_VERSION,
        repo_path=feast_dir(deployment),
    )


def feature_repo(deployment: Deployment) -> FeatureRepo:
    from features.repo.definitions import build_repo

    return build_repo(feature_history_dir(deployment))


def feature_store(redis_settings: RedisSettings, deployment: Deployment) -> FeatureStore:
    from feast import FeatureStore

    feast_dir(deployment).mkdir(parents=True, exist_ok=True)
    return _feast_call(
        "build the feature store",
        lambda: FeatureStore(config=repo_config(redis_settings, deployment)),
    )


def apply_repo(redis_settings: RedisSettings, deployment: Deployment) -> FeatureStore:
    """Register entities, sources and views (``feast apply``); running it twice changes nothing."""
    repo = feature_repo(deployment)
    for view in repo.views:
        (feature_history_dir(deployment) / view).mkdir(parents=True, exist_ok=True)
    store = feature_store(redis_settings, deployment)
    _feast_call("apply the feature repo", lambda: store.apply(repo.objects))
    return store


def _feast_call(what: str, call: Callable[[], _T]) -> _T:
    from feast.errors import FeastError

    try:
        return call()
    except (FeastError, redis.RedisError, OSError) as exc:
        raise DependencyUnavailable("feast", f"cannot {what}: {exc}") from exc


# -- the online store adapter ---------------------------------------------------------------------
class FeastOnlineStore:
    """Feast/Redis online features behind ``OnlineFeatureWriter`` and ``OnlineFeatureReader``.

    The Feast views must have been applied (``apply_repo``) for ``read_path="feast"``; the direct
    Redis path needs only Redis.
    """

    def __init__(
        self,
        redis_settings: RedisSettings,
        deployment: Deployment,
        *,
        read_path: ReadPath = "redis",
        client: RedisClient | None = None,
        store: FeatureStore | None = None,
    ) -> None:
        if read_path not in ("redis", "feast"):
            raise ConfigError(f"read_path must be 'redis' or 'feast', got {read_path!r}")
        self.redis_settings = redis_settings
        self.deployment = deployment
        self.read_path = read_path
        # Timeouts: a hung Redis must surface as DependencyUnavailable, not block a request.
        self._client = client or redis_client(redis_settings, timeout_s=5.0, connect_timeout_s=2.0)
        self._cluster = is_cluster(self._client)
        self._store = store
        project = deployment.feast_project
        self._users = FeastRedisLayout(
            project=project,
            view=USER_VIEW,
            join_key=USER_JOIN_KEY,
            feature_types=USER_FEATURE_TYPES,
        )
        self._items = FeastRedisLayout(
            project=project,
            view=ITEM_VIEW,
            join_key=ITEM_JOIN_KEY,
            feature_types=ITEM_FEATURE_TYPES,
        )
        self._cas_rows = registered_script(self._client, CAS_ROWS_SCRIPT)
        self._batch_read = registered_script(self._client, BATCH_READ_SCRIPT)
        self._item_memo: dict[tuple[str, tuple[bytes | None, ...]], ItemFeatureRow] = {}

    @property
    def client(self) -> RedisClient:
        return self._client

    @property
    def feast(self) -> FeatureStore:
        if self._store is None:
            self._store = feature_store(self.redis_settings, self.deployment)
        return self._store

    # -- writer --------------------------------------------------------------------------------
    def write_users(self, rows: Sequence[UserFeatureRow]) -> None:
        self._write(
            self._users, [(r.user_id, r.event_time_ms, user_row_to_record(r)) for r in rows]
        )

    def write_items(self, rows: Sequence[ItemFeatureRow]) -> None:
        self._write(
            self._items, [(r.item_id, r.event_time_ms, item_row_to_record(r)) for r in rows]
        )

    def delete_users(self, user_ids: Iterable[str]) -> None:
        """Privacy deletion: the user entity's hash holds only user views, so deleting it
        forgets the user in this namespace (a later write starts the user afresh)."""
        self._delete(self._users, user_ids)

    def delete_items(self, item_ids: Iterable[str]) -> None:
        """Remove items' online rows (not part of the ports: for clean-up and catalogue purges)."""
        self._delete(self._items, item_ids)

    def _delete(self, layout: FeastRedisLayout, ids: Iterable[str]) -> None:
        keys = [layout.key(entity_id) for entity_id in ids]
        for start in range(0, len(keys), 1000):
            chunk = keys[start : start + 1000]
            self._redis(f"delete {layout.view} rows", partial(self._client.delete, *chunk))

    def _write(self, layout: FeastRedisLayout, rows: list[tuple[str, int, dict[str, Any]]]) -> None:
        if not rows:
            return

        def run() -> None:
            # One script call for the batch (``CAS_ROWS_SCRIPT``), each row compared and written
            # in order: rows of one entity in one batch apply one after the other, as in
            # memory. (A pipeline of one call per row cost the worker ~15 µs of CPU per row.)
            keys: list[bytes] = []
            per_row: list[list[bytes | int]] = []  # secs, nanos, n, then n field/value args
            for entity_id, event_time_ms, record in rows:
                row = layout.cas_args(record, event_time_ms)  # ts field, secs, nanos, pairs…
                keys.append(layout.key(entity_id))
                per_row.append([row[1], row[2], len(row) - 3, *row[3:]])
            if not self._cluster:
                self._cas_rows(keys=keys, args=[layout.ts_field, *chain.from_iterable(per_row)])
                return
            # A cluster runs a script only over keys of one slot: one call per slot, all in one
            # pipeline. An entity's rows share its key, so they still apply in order.
            calls = [
                (
                    [keys[p] for p in positions],
                    [layout.ts_field, *chain.from_iterable(per_row[p] for p in positions)],
                )
                for positions in positions_by_slot(keys).values()
            ]
            scripts_by_slot(self._client, self._cas_rows, calls)

        self._redis(f"write {len(rows)} {layout.view} rows", run)

    # -- reader --------------------------------------------------------------------------------
    def read_users(self, user_ids: Sequence[str]) -> dict[str, UserFeatureRow]:
        return self._read(self._users, USER_FEATURES, user_ids, user_record_to_row, None)

    def read_items(self, item_ids: Sequence[str]) -> dict[str, ItemFeatureRow]:
        return self._read(self._items, ITEM_FEATURES, item_ids, item_record_to_row, self._item_memo)

    def _read(
        self,
        layout: FeastRedisLayout,
        features: Sequence[str],
        ids: Sequence[str],
        to_row: Callable[[str, dict[str, Any]], _Row],
        memo: dict[tuple[str, tuple[bytes | None, ...]], _Row] | None,
    ) -> dict[str, _Row]:
        unique = list(dict.fromkeys(ids))
        if not unique:
            return {}
        if self.read_path == "feast":
            records = self._read_feast(layout, features, unique)
            return {entity_id: to_row(entity_id, rec) for entity_id, rec in records.items()}
        return self._read_redis(layout, unique, to_row, memo)

    def _read_redis(
        self,
        layout: FeastRedisLayout,
        ids: list[str],
        to_row: Callable[[str, dict[str, Any]], _Row],
        memo: dict[tuple[str, tuple[bytes | None, ...]], _Row] | None,
    ) -> dict[str, _Row]:
        def run() -> list[list[bytes | None]]:
            keys = [layout.key(entity_id) for entity_id in ids]
            if self._cluster:  # keys of many slots: one HMGET each, one pipeline
                pipe = self._client.pipeline(transaction=False)
                for key in keys:
                    pipe.execute_command("HMGET", key, *layout.read_fields)
                return cast(list[list[bytes | None]], pipe.execute())
            return self._batch_read(keys=keys, args=layout.read_fields)

        replies = self._redis(f"read {len(ids)} {layout.view} rows", run)
        rows: dict[str, _Row] = {}
        for entity_id, values in zip(ids, replies, strict=True):
            if values[-1] is None:  # no "_ts:<view>" field: no row
                continue
            # Item rows change rarely and are re-read on every request: the same stored bytes
            # always decode to the same row, so decode each version once.
            memo_key = (entity_id, tuple(values))
            row = memo.get(memo_key) if memo is not None else None
            if row is None:
                record = layout.decode(values)
                assert record is not None
                row = to_row(entity_id, record)
                if memo is not None:
                    if len(memo) >= _ITEM_MEMO_SIZE:
                        memo.clear()
                    memo[memo_key] = row
            rows[entity_id] = row
        return rows

    def _read_feast(
        self, layout: FeastRedisLayout, features: Sequence[str], ids: list[str]
    ) -> dict[str, dict[str, Any]]:
        refs = [f"{layout.view}:{name}" for name in features]
        response = _feast_call(
            f"read {len(ids)} {layout.view} rows",
            lambda: self.feast.get_online_features(
                features=refs, entity_rows=[{layout.join_key: i} for i in ids]
            ).to_dict(),
        )
        records = {}
        for index, entity_id in enumerate(ids):
            record = {name: response[name][index] for name in features}
            if record["event_time_ms"] is not None:  # every written row carries its event time
                records[entity_id] = record
        return records

    def _redis(self, what: str, call: Callable[[], _T]) -> _T:
        try:
            return call()
        except (redis.RedisError, OSError) as exc:
            raise DependencyUnavailable("redis", f"cannot {what}: {exc}") from exc

    def close(self) -> None:
        self._client.close()
