"""The offline impression log: every served slate the worker admitted, beside the event log.

``<data_dir>/offline/<namespace>/impressions/NNNNNNNNNN.parquet``, written by the worker's
impressions step (``streams.agents.StreamRuntime.on_impressions``) in the same batch files (and
merged the same way, ``features.batch_folder``) and with the same guarantees as
``features.offline.OfflineEventLog``: appended before the batch's
state commit (at-least-once), so ``read`` drops re-delivered slates by ``request_id`` (one slate
per request) and the reader sees each admitted slate exactly once. Slates of users who opted out
or were deleted (through the slate's event time) are not logged, and a deletion erases the
user's slates (``delete_user``), as for events.

What reads it: ``features.traffic_log.read_traffic(…, "offline")``, hence ``aether ope
--from-log --source offline`` and ``aether experiments report --source offline``. The slate's
items (id, position, score, source, propensity) and context are kept as JSON text: they are read
whole, never filtered on.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from core.settings import Deployment
from events.models import Impression
from features.batch_folder import BatchFolder
from features.offline import offline_dir

IMPRESSION_LOG_SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("user_id", pa.string()),
        ("event_time_ms", pa.int64()),
        ("event_time", pa.timestamp("ms", tz="UTC")),
        ("model_version", pa.string()),
        ("experiment_arm", pa.string()),
        ("fallback", pa.bool_()),
        ("items", pa.string()),  # JSON array of {item_id, position, score, source, propensity}
        ("context", pa.string()),  # JSON object of string -> string
    ]
)


class OfflineImpressionLog:
    """Append-only log of admitted slates: ``<offline>/impressions/NNNNNNNNNN.parquet``."""

    def __init__(self, deployment: Deployment) -> None:
        self._files = BatchFolder(offline_dir(deployment) / "impressions", IMPRESSION_LOG_SCHEMA)

    @property
    def folder(self) -> Path:
        return self._files.folder

    def exists(self) -> bool:
        """Whether any slate was ever logged (a worker older than this log wrote none)."""
        return bool(self._files.files())

    def append(self, impressions: Sequence[Impression]) -> Path | None:
        """Write one batch file (None for an empty batch)."""
        return self.write([self.table(impressions)])

    def write(self, tables: Sequence[pa.Table]) -> Path | None:
        """One batch file of :meth:`table`'s tables, in order (None when they hold no row)."""
        return self._files.write_tables(tables)

    def table(self, impressions: Sequence[Impression]) -> pa.Table:
        """The log's rows of ``impressions``, to :meth:`write` now or later (``streams.sinks``)."""
        columns: dict[str, list[Any]] = {name: [] for name in IMPRESSION_LOG_SCHEMA.names}
        for slate in impressions:
            event_time_ms = slate.event_time_ms
            columns["request_id"].append(slate.request_id)
            columns["user_id"].append(slate.user_id)
            columns["event_time_ms"].append(event_time_ms)
            columns["event_time"].append(event_time_ms)
            columns["model_version"].append(slate.model_version)
            columns["experiment_arm"].append(slate.experiment_arm)
            columns["fallback"].append(slate.fallback)
            columns["items"].append(json.dumps([i.model_dump(mode="json") for i in slate.items]))
            columns["context"].append(json.dumps(slate.context, sort_keys=True))
        return self._files.table(columns)

    def read(
        self,
        *,
        user_ids: Iterable[str] | None = None,
        start_ms: int | None = None,
        before_ms: int | None = None,
    ) -> pd.DataFrame:
        """Slates with ``start_ms <= event_time_ms < before_ms``, one per ``request_id`` (the
        first copy written wins), ordered by (event time, request id); ``items`` and ``context``
        as JSON text (``read_impressions`` decodes them)."""
        return self._files.read_log("request_id", user_ids, start_ms, before_ms)

    def read_impressions(self, **window: Any) -> list[Impression]:
        """``read(**window)`` as the event model, as the impressions topic carries it."""
        return [
            Impression.model_validate(
                {
                    "request_id": row.request_id,
                    "user_id": row.user_id,
                    "event_time": int(row.event_time_ms),
                    "model_version": row.model_version,
                    "experiment_arm": row.experiment_arm,
                    "fallback": bool(row.fallback),
                    "items": json.loads(row.items),
                    "context": json.loads(row.context),
                }
            )
            for row in self.read(**window).itertuples(index=False)
        ]

    def delete_user(self, user_id: str) -> int:
        """Privacy deletion: remove every slate served to the user; how many were removed."""
        return self._files.remove_rows("user_id", user_id)
