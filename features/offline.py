"""The offline side: an append-only event log, a feature-history log and point-in-time features.

Storage choice: **parquet files** under ``<data_dir>/offline/<namespace>/``, one file per flushed
batch, rather than PostgreSQL. The log is append-only and read in bulk by the trainer and by
Feast's file offline store, which reads exactly this format; the embedded default needs no server;
columnar files compress event logs well and make "read one column to find a user" cheap for
privacy deletions (a file holding the user is rewritten without them and swapped in atomically).
Each folder is a ``features.batch_folder.BatchFolder``: files are named by a batch sequence number
claimed with an atomic hard link, so concurrent writers never overwrite each other, and small
files are merged size-tiered into files named by their range of batches (crash-safe, rows kept in
batch order and read exactly once; see that module).

* ``OfflineEventLog``: every valid ``Interaction`` (``events/``); ``read`` drops redelivered
  ``event_id``s (rule 1) and returns events ordered by (event time, event id).
* ``FeatureHistory``: every ``UserFeatureRow``/``ItemFeatureRow`` written online, with an
  ``event_timestamp`` column (the row's event time) that the Feast views' file sources point at,
  and a ``created_timestamp`` (the write order) that breaks ties between rows of one event time.
* ``point_in_time_features``: features for (entity, timestamp) pairs through Feast's
  ``get_historical_features``, **strictly before** each timestamp (docs/architecture.md, event-time rule 5). Feast joins
  rows with ``event_timestamp <= t``; feature rows carry whole-millisecond event times, so asking
  Feast at ``ceil_ms(t) - 1 ms`` returns exactly the rows with event time ``< t``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from core.errors import DependencyUnavailable, SchemaError
from core.settings import Deployment, RedisSettings
from events.models import Interaction
from features.batch_folder import BatchFolder
from features.rows import ItemFeatureRow, UserFeatureRow
from features.schema import (
    CREATED_TIMESTAMP,
    EVENT_TIMESTAMP,
    ITEM_FEATURE_TYPES,
    ITEM_FEATURES,
    ITEM_JOIN_KEY,
    ITEM_VIEW,
    USER_FEATURE_TYPES,
    USER_FEATURES,
    USER_JOIN_KEY,
    USER_VIEW,
    item_row_to_record,
    user_row_to_record,
)
from features.store import feature_history_dir, feature_store

_ARROW_TYPES: dict[str, pa.DataType] = {
    "int64": pa.int64(),
    "float64": pa.float64(),
    "string": pa.string(),
    "bool": pa.bool_(),
    "string_list": pa.list_(pa.string()),
}
_UTC_MS = pa.timestamp("ms", tz="UTC")
_UTC_US = pa.timestamp("us", tz="UTC")

EVENT_LOG_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("event_type", pa.string()),
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("event_time_ms", pa.int64()),
        ("event_time", _UTC_MS),
        ("value", pa.float64()),
        ("request_id", pa.string()),
        ("context", pa.string()),  # JSON object of string -> string
    ]
)


def offline_dir(deployment: Deployment) -> Path:
    return deployment.data_dir.resolve() / "offline" / deployment.namespace


class OfflineEventLog:
    """Append-only log of every valid interaction: ``<offline>/events/NNNNNNNNNN.parquet``."""

    def __init__(self, deployment: Deployment) -> None:
        self._files = BatchFolder(offline_dir(deployment) / "events", EVENT_LOG_SCHEMA)

    @property
    def folder(self) -> Path:
        return self._files.folder

    def append(self, events: Sequence[Interaction]) -> Path | None:
        """Write one batch file (None for an empty batch)."""
        return self.write([self.table(events)])

    def write(self, tables: Sequence[pa.Table]) -> Path | None:
        """One batch file of :meth:`table`'s tables, in order (None when they hold no row)."""
        return self._files.write_tables(tables)

    def table(self, events: Sequence[Interaction]) -> pa.Table:
        """The log's rows of ``events``, to :meth:`write` now or later (``streams.sinks``)."""
        columns: dict[str, list[Any]] = {name: [] for name in EVENT_LOG_SCHEMA.names}
        for event in events:
            event_time_ms = event.event_time_ms  # a computed property: read it once
            columns["event_id"].append(event.event_id)
            columns["event_type"].append(str(event.event_type))
            columns["user_id"].append(event.user_id)
            columns["item_id"].append(event.item_id)
            columns["event_time_ms"].append(event_time_ms)
            columns["event_time"].append(event_time_ms)
            columns["value"].append(event.value)
            columns["request_id"].append(event.request_id)
            context = event.context
            columns["context"].append(json.dumps(context, sort_keys=True) if context else "{}")
        return self._files.table(columns)

    def read(
        self,
        *,
        user_ids: Iterable[str] | None = None,
        start_ms: int | None = None,
        before_ms: int | None = None,
    ) -> pd.DataFrame:
        """Events with ``start_ms <= event_time_ms < before_ms``, de-duplicated by ``event_id``
        (the first copy written wins), ordered by (event time, event id)."""
        return self._files.read_log("event_id", user_ids, start_ms, before_ms)

    def delete_user(self, user_id: str) -> int:
        """Privacy deletion: remove every event of the user; returns how many were removed."""
        return self._files.remove_rows("user_id", user_id)


def _history_schema(join_key: str, types: dict[str, str]) -> pa.Schema:
    fields = [
        (join_key, pa.string()),
        (EVENT_TIMESTAMP, _UTC_MS),
        (CREATED_TIMESTAMP, _UTC_US),
    ]
    fields += [(name, _ARROW_TYPES[kind]) for name, kind in types.items()]
    return pa.schema(fields)


USER_HISTORY_SCHEMA = _history_schema(USER_JOIN_KEY, USER_FEATURE_TYPES)
ITEM_HISTORY_SCHEMA = _history_schema(ITEM_JOIN_KEY, ITEM_FEATURE_TYPES)
# created_timestamp = epoch + (batch sequence × 1 s) + (row index × 1 µs): write order, not wall
# clock, so a replay reproduces it; a batch of up to a million rows keeps the order strict.
# Merging files keeps the column as written, and new batches are numbered above merged ones.
_ROWS_PER_SECOND_OF_CREATED = 1_000_000


class FeatureHistory:
    """Every feature row written online, kept for point-in-time joins (the views' file sources).

    Feast reads each view's folder whole, live or not: between a merge's publication and the
    removal of its inputs (or after a crash in between, until the next merge or deletion sweeps
    them) it reads those rows twice, as identical rows (same entity, event and created
    timestamps), which a point-in-time join returns once.
    """

    def __init__(self, deployment: Deployment) -> None:
        root = feature_history_dir(deployment)  # the views' file sources point at this folder
        self._users = BatchFolder(root / USER_VIEW, USER_HISTORY_SCHEMA)
        self._items = BatchFolder(root / ITEM_VIEW, ITEM_HISTORY_SCHEMA)

    def append(self, rows: Sequence[UserFeatureRow | ItemFeatureRow]) -> None:
        for view, table in self.tables(rows).items():
            self.write(view, [table])

    def tables(self, rows: Sequence[UserFeatureRow | ItemFeatureRow]) -> dict[str, pa.Table]:
        """The rows of each view (``USER_VIEW``, ``ITEM_VIEW``) that ``rows`` holds, without
        their created timestamps (given when written): to :meth:`write` now or later."""
        users = [r for r in rows if isinstance(r, UserFeatureRow)]
        items = [r for r in rows if isinstance(r, ItemFeatureRow)]
        tables = {}
        if users:
            tables[USER_VIEW] = _rows_table(
                self._users.schema,
                USER_JOIN_KEY,
                USER_FEATURES,
                [(r.user_id, r.event_time_ms, user_row_to_record(r)) for r in users],
            )
        if items:
            tables[ITEM_VIEW] = _rows_table(
                self._items.schema,
                ITEM_JOIN_KEY,
                ITEM_FEATURES,
                [(r.item_id, r.event_time_ms, item_row_to_record(r)) for r in items],
            )
        return tables

    def write(self, view: str, tables: Sequence[pa.Table]) -> None:
        """:meth:`tables`' tables of one view, in order, in batch files of fewer than a million
        rows each (the created timestamps number rows within a batch)."""
        files = self._users if view == USER_VIEW else self._items
        rows = [t for t in tables if t.num_rows]
        if not rows:
            return
        whole = pa.concat_tables(rows)
        step = _ROWS_PER_SECOND_OF_CREATED - 1
        for start in range(0, whole.num_rows, step):
            part = whole.slice(start, step)

            def build(seq: int, part: pa.Table = part) -> pa.Table:
                first = seq * _ROWS_PER_SECOND_OF_CREATED
                created = pa.array(range(first, first + part.num_rows), type=_UTC_US)
                return part.append_column(CREATED_TIMESTAMP, created).select(files.schema.names)

            files.write(build)

    def read(self, view: str) -> pd.DataFrame:
        files = self._users if view == USER_VIEW else self._items
        return files.read().to_pandas()

    def delete_user(self, user_id: str) -> int:
        return self._users.remove_rows(USER_JOIN_KEY, user_id)

    def entity_ids(self, view: str) -> set[str]:
        """Every entity id with at least one row in the view's history (one column read)."""
        files = self._users if view == USER_VIEW else self._items
        join_key = USER_JOIN_KEY if view == USER_VIEW else ITEM_JOIN_KEY
        return set(files.read(columns=[join_key]).column(join_key).to_pylist())


def _rows_table(
    schema: pa.Schema,
    join_key: str,
    features: Sequence[str],
    rows: list[tuple[str, int, dict[str, Any]]],
) -> pa.Table:
    columns: dict[str, list[Any]] = {join_key: [], EVENT_TIMESTAMP: []}
    columns.update({name: [] for name in features})
    for entity_id, event_time_ms, record in rows:
        columns[join_key].append(entity_id)
        columns[EVENT_TIMESTAMP].append(event_time_ms)
        for name in features:
            columns[name].append(record[name])
    return pa.table(
        {
            f.name: pa.array(columns[f.name], type=f.type)
            for f in schema
            if f.name != CREATED_TIMESTAMP
        }
    )


_CUTOFF = "_pit_cutoff_ms"


def point_in_time_features(
    redis_settings: RedisSettings,
    deployment: Deployment,
    entity_df: pd.DataFrame,
    *,
    store: Any = None,
) -> pd.DataFrame:
    """Feature values as of strictly before each row's ``event_timestamp``.

    ``entity_df`` holds ``event_timestamp`` (aware, or naive UTC) and ``user_id`` and/or
    ``item_id``; the result is ``entity_df`` (same rows, same order) plus one column per feature,
    named ``<view>__<feature>`` (e.g. ``user_features__recent_items``); null where the entity had
    no feature row before that time. ``store`` defaults to ``features.store.feature_store``; the
    views must have been applied (``apply_repo``).
    """
    if EVENT_TIMESTAMP not in entity_df.columns:
        raise SchemaError(f"entity_df needs an {EVENT_TIMESTAMP!r} column", reason="missing_column")
    views = [
        (view, join_key, features)
        for view, join_key, features in (
            (USER_VIEW, USER_JOIN_KEY, USER_FEATURES),
            (ITEM_VIEW, ITEM_JOIN_KEY, ITEM_FEATURES),
        )
        if join_key in entity_df.columns
    ]
    if not views:
        raise SchemaError(
            f"entity_df needs a {USER_JOIN_KEY!r} or {ITEM_JOIN_KEY!r} column",
            reason="missing_column",
        )
    requested = pd.to_datetime(entity_df[EVENT_TIMESTAMP], utc=True)
    requested_ns = requested.dt.as_unit("ns").astype("int64").to_numpy()
    # Feature rows have whole-millisecond event times, so "event time < t" is exactly
    # "event time <= ceil_ms(t) - 1 ms", which is Feast's "<=" join at that instant.
    cutoff_ms = -(-requested_ns // 1_000_000) - 1
    query = pd.DataFrame({join_key: entity_df[join_key].to_numpy() for _, join_key, _ in views})
    query[EVENT_TIMESTAMP] = pd.to_datetime(cutoff_ms, unit="ms", utc=True)
    query[_CUTOFF] = cutoff_ms

    history = FeatureHistory(deployment)
    result = entity_df.reset_index(drop=True).copy()
    for view, join_key, features in views:
        # Feast 0.67's file store fails on entities with no rows at all (NaT created timestamps),
        # drops entity rows whose rows all lie in the future and collapses repeated (entity, time)
        # requests. So: ask only about entities with history, each (entity, cutoff) pair once,
        # and merge the answers back onto every request; what Feast did not answer is null.
        asked = query[query[join_key].isin(history.entity_ids(view))]
        asked = asked[[join_key, EVENT_TIMESTAMP, _CUTOFF]].drop_duplicates([join_key, _CUTOFF])
        joined = pd.DataFrame(index=pd.RangeIndex(len(query)))
        if len(asked):
            if store is None:
                store = feature_store(redis_settings, deployment)
            refs = [f"{view}:{name}" for name in features]
            from feast.errors import FeastError  # lazy: the worker imports this module, not Feast

            try:
                answer = store.get_historical_features(
                    entity_df=asked, features=refs, full_feature_names=True
                ).to_df()
            except (FeastError, OSError, pa.ArrowException) as exc:
                raise DependencyUnavailable("feast", f"point-in-time join failed: {exc}") from exc
            answer = answer.drop(columns=[EVENT_TIMESTAMP])
            joined = query[[join_key, _CUTOFF]].merge(answer, on=[join_key, _CUTOFF], how="left")
        kinds = USER_FEATURE_TYPES if view == USER_VIEW else ITEM_FEATURE_TYPES
        for name in features:
            column = f"{view}__{name}"
            values = joined[column].to_numpy() if column in joined else [None] * len(query)
            # Nullable integer/boolean columns, not floats with NaN: counts and times stay exact.
            dtype = {"int64": "Int64", "bool": "boolean"}.get(kinds[name])
            result[column] = (
                pd.array(values, dtype=dtype)
                if dtype
                else [None if _is_missing(v) else v for v in values]
            )
    return result


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)
