"""Where the worker's applied events and rows go besides the online store (adapters).

* the **offline event log** and the **feature history** (``features.offline``: parquet), and
  the **offline impression log** (``features.offline_impressions``);
* **privacy erasure** of a user's offline data.

(Item transitions are not a sink: they are exactly-once with the user states, so they ride on the
state store's commit, ``streams.state_port.StateCommit.transitions``.)

**The outbox.** A batch does not write parquet. Its rows go into the state store's commit as
Arrow IPC bytes, one entry per outbox (``OUTBOXES``: event log, impression log, the two views'
feature history; ``StateCommit.offline``), in the same transaction as the state they came from, so
no crash can lose them or add them twice. :meth:`StreamSinks.flush` moves them into parquet, many
batches per file: it reads an outbox's entries, writes one batch file of their rows in commit
order, and only then deletes the entries. A crash between the two writes those rows again on the
next flush — at-least-once, and safe: ``OfflineEventLog.read`` drops repeated ``event_id``\\ s,
``OfflineImpressionLog.read`` repeated ``request_id``\\ s, and a repeated feature row is the same row
at the same event time. The worker flushes every ``stream.offline_flush_s`` (default 1 s), before
an erasure and when it stops; any worker flushes every entry, so what a stopped worker left is
flushed by the next one. The offline logs therefore lag the online store by about that interval.

Why: a parquet file per batch cost more worker CPU than any stage but Faust's own in live traffic,
where batches hold a few dozen events (``docs/benchmarks/ingest.md``), and its merges more still.

Flushes and erasures take one lock per namespace (``flock`` on ``<offline>/.outbox.lock``), so an
erasure's flush and removal cannot interleave with another process's flush: no flush can write a
deleted user's rows after their removal. Each batch file is then merged size-tiered
(``features.batch_folder``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator, Sequence

import pyarrow as pa

from events.models import Impression, Interaction
from features.offline import FeatureHistory, OfflineEventLog
from features.offline_impressions import OfflineImpressionLog
from features.rows import ItemFeatureRow, UserFeatureRow
from features.schema import ITEM_VIEW, USER_VIEW
from streams import worker_metrics
from streams.state_port import StateStore
from streams.worker_metrics import stage_cpu

EVENTS, IMPRESSIONS = "events", "impressions"
OUTBOXES = (EVENTS, IMPRESSIONS, USER_VIEW, ITEM_VIEW)  # feature history: one per view
ENTRIES_PER_READ = 512  # outbox entries one flush reads (and writes as one file) at a time


class StreamSinks:
    """Offline logs and feature history of one namespace (built by ``streams.build_worker``)."""

    def __init__(
        self,
        event_log: OfflineEventLog,
        history: FeatureHistory,
        impressions: OfflineImpressionLog | None = None,
    ) -> None:
        """``impressions``: None keeps no slates offline."""
        self.event_log = event_log
        self.history = history
        self.impressions = impressions
        self._lock_path = event_log.folder.parent / ".outbox.lock"
        self._in_process = threading.Lock()  # flock is per open file: threads need their own

    # -- a batch's entries (the ``offline_sinks`` stage, ``streams.worker_metrics``) -----------
    def entries(
        self,
        events: Sequence[Interaction] = (),
        rows: Sequence[UserFeatureRow | ItemFeatureRow] = (),
        impressions: Sequence[Impression] = (),
    ) -> dict[str, list[bytes]]:
        """The outbox entries of a batch's applied events, feature rows and admitted slates."""
        with stage_cpu("offline_sinks"):
            tables: dict[str, pa.Table] = {}
            if events:
                tables[EVENTS] = self.event_log.table(events)
            if impressions and self.impressions is not None:
                tables[IMPRESSIONS] = self.impressions.table(impressions)
            if rows:
                tables.update(self.history.tables(rows))
            return {name: [_ipc(table)] for name, table in tables.items()}

    # -- flushing ------------------------------------------------------------------------------
    def flush(self, store: StateStore) -> int:
        """Every outbox entry into parquet (module docstring); the rows written."""
        with self._locked():
            return self._flush(store)

    def _flush(self, store: StateStore) -> int:
        written = 0
        for name in OUTBOXES:
            while entries := store.load_offline(name, ENTRIES_PER_READ):
                with stage_cpu("offline_sinks"):
                    tables = [_table(raw) for _, raw in entries]
                    self._write(name, tables)
                store.drop_offline(name, [entry_id for entry_id, _ in entries])
                rows = sum(t.num_rows for t in tables)
                worker_metrics.OFFLINE_ROWS.labels(name).inc(rows)
                written += rows
                if len(entries) < ENTRIES_PER_READ:
                    break
        return written

    def _write(self, name: str, tables: Sequence[pa.Table]) -> None:
        if name == EVENTS:
            self.event_log.write(tables)
        elif name == IMPRESSIONS:
            if self.impressions is not None:
                self.impressions.write(tables)
        else:
            self.history.write(name, tables)

    def erase_user(self, user_id: str, store: StateStore) -> None:
        """Privacy deletion of the user's offline data (idempotent): the outboxes are flushed
        first, so none of their rows reaches parquet after the removal."""
        with self._locked():
            self._flush(store)
            self.event_log.delete_user(user_id)
            self.history.delete_user(user_id)
            if self.impressions is not None:
                self.impressions.delete_user(user_id)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._in_process:
            self._lock_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # releases the lock


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


def _table(raw: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(raw)).read_all()
