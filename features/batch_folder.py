"""A folder of parquet batch files: atomic appends, size-tiered compaction, row removal.

Where the offline logs keep their rows (``features.offline``: event log and feature history;
``features.offline_impressions``: slates). The worker appends one file per batch, and batches
close when the queue runs dry, so a quiet worker writes many tiny files; compaction merges them.

**Names.** ``NNNNNNNNNN.parquet`` is one appended batch, ``N`` its sequence number;
``AAAAAAAAAA-BBBBBBBBBB.parquet`` is the merge of batches ``A`` to ``B``: their rows, in batch
order. Anything starting with a dot (``.tmp-…``, ``.compact-…``, ``.rewrite-…``, ``.lock``) is
work in progress or a lock, never read (pyarrow's and Feast's folder readers skip such names too).

**Live files.** A file is live unless another file's range contains its own: the inputs of a
merge stay behind between the merged file's publication and their removal (or after a crash in
between), and are then ignored. Readers read the live files in number order, so every appended
row is read exactly once, in append order, before, during and after a merge. A reader that lists
the inputs and finds one removed before it opens it lists again (the merged file is there by then).

**Appends** list the folder (a few dozen names at most, thanks to compaction) and claim the number
after the highest one with ``os.link``, which refuses an existing name: concurrent writers never
overwrite each other, and, as no merged input is removed between an append's listing and its
link (the locks, below), a batch never gets a number inside a merged range. Numbers stay dense,
so ranges are contiguous.

**Compaction** (``Compaction``; ``plan_merge``): after each append, at most one merge. The files
after the last one of ``max_file_bytes`` or more are the candidates; the oldest candidate whose
newer files add up to at least ``fanout − 1`` times its own size is merged with all of them (at
most ``max_merge_files`` files). With equal batches that is a base-``fanout`` counter: ``fanout``
files of one size become one file of the next, at most ``fanout − 1`` files per size, so ``n``
batches leave ``O(fanout · log n)`` files and each row is rewritten ``O(log n)`` times; one merge
reads less than ``fanout × max_file_bytes`` plus the new batch. A merge is crash-safe: the rows
are written under ``.compact-<uuid>`` and flushed to disk, published under the range's name with
``os.link`` (atomic; the folder's entries flushed too), and only then are the inputs removed; a
crash at any step leaves each row in exactly one live file, and the next merge or removal sweeps
what was left behind.

**Removal** (privacy: ``remove_rows``) rewrites each live file holding the value without it and
swaps it in with ``os.replace`` (atomic), after sweeping the covered inputs a crashed merge left
behind: a deleted user's rows are gone from every file. Merges and removals hold an exclusive
``flock`` on ``.lock`` (a merge never waits for it: it skips and the next append tries again), so
a merge can neither copy rows a removal is erasing nor remove a file a removal rewrote. Appends
take another lock, ``.numbers.lock``, shared from listing to publishing, and whatever removes a
merged input (a merge, a sweep) takes it exclusive for the removal only: no number is freed
between an append's listing and its link (a batch linked under a number a merge had just consumed
would sit inside the merged range, ignored, lost — seen with three threads appending while another
read and removed), yet an append never waits for a merge's reading, writing and flushing, only for
its unlinks (a worker's batch waits for its own appends' merges, not for another worker's).
Reads take no lock. ``flock`` needs a local filesystem.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.errors import ConfigError, DependencyUnavailable

log = logging.getLogger(__name__)

_NAME = re.compile(r"^(\d{10})(?:-(\d{10}))?\.parquet$")
_LOCK = ".lock"  # merges and removals
_NUMBERS_LOCK = ".numbers.lock"  # appends (shared) against freeing batch numbers (exclusive)
_APPEND_TMP = ".tmp-"  # an append in progress (any process): swept only when stale
_MERGE_TMP = ".compact-"  # a merge in progress: only the lock holder writes one
_REWRITE_TMP = ".rewrite-"  # a removal in progress: likewise
# An append's temporary file lives for the milliseconds of one parquet write; one this old was
# left by a crash (its batch was re-delivered and appended again).
_STALE_APPEND_S = 3600.0
# A reader lists again when a merge removed a file it listed; each retry needs another merge.
_READ_ATTEMPTS = 8
_MERGE_ROW_GROUP_ROWS = 64 * 1024


@dataclass(frozen=True, slots=True)
class Compaction:
    """Size-tiered compaction of a batch folder (module docstring).

    ``fanout``: how many files of one size are merged into one. ``max_file_bytes``: a file this
    large is never merged again (it bounds one merge's work). ``max_merge_files``: the most files
    one merge reads (a folder written before compaction existed catches up over several appends).
    """

    fanout: int = 8
    max_file_bytes: int = 32 * 1024 * 1024
    max_merge_files: int = 32

    def __post_init__(self) -> None:
        if self.fanout < 2 or self.max_file_bytes < 1 or self.max_merge_files < 2:
            raise ConfigError(f"compaction needs fanout >= 2 and max_merge_files >= 2: {self}")


DEFAULT_COMPACTION = Compaction()


@dataclass(frozen=True, slots=True)
class Span:
    """One batch file: the batches ``first`` to ``last`` (equal for an appended batch)."""

    first: int
    last: int
    path: Path


@dataclass(frozen=True, slots=True)
class FolderUsage:
    """What a batch folder holds: live files, their bytes, and batches appended so far."""

    files: int
    bytes: int
    batches: int


def parse_span(path: Path) -> Span | None:
    match = _NAME.match(path.name)
    if match is None:
        return None
    first = int(match.group(1))
    if match.group(2) is None:
        return Span(first, first, path)
    last = int(match.group(2))
    return Span(first, last, path) if first < last else None  # a merge spans two batches or more


def live_spans(spans: Iterable[Span]) -> tuple[list[Span], list[Span]]:
    """``(live, covered)``: a span is covered when another one contains it; live ones in order."""
    live: list[Span] = []
    covered: list[Span] = []
    reach = 0  # the highest batch number a span seen so far ends at
    for span in sorted(spans, key=lambda s: (s.first, -s.last)):
        if span.last <= reach:
            covered.append(span)
        else:
            live.append(span)
            reach = span.last
    return live, covered


def plan_merge(sizes: Sequence[int], compaction: Compaction) -> tuple[int, int] | None:
    """Which files to merge, as ``(start, stop)`` indices into ``sizes`` (oldest first), or None.

    Candidates are the files after the last one of ``max_file_bytes`` or more (merges are of
    contiguous files). The oldest candidate whose newer candidates add up to at least
    ``fanout − 1`` times its size is merged with them, ``max_merge_files`` files at most.
    """
    start = 0
    for n, size in enumerate(sizes):
        if size >= compaction.max_file_bytes:
            start = n + 1
    newer = sum(sizes[start:])
    for n in range(start, len(sizes) - 1):
        newer -= sizes[n]
        if newer >= (compaction.fanout - 1) * sizes[n]:
            return n, min(len(sizes), n + compaction.max_merge_files)
    return None


# Every change this module makes to a folder goes through these four (tests make them crash).
def _write_parquet(
    tables: Iterable[pa.Table], path: Path, schema: pa.Schema, *, durable: bool = False
) -> None:
    """``durable``: on disk before this returns (a merge or a rewrite replaces the only copy)."""
    with pq.ParquetWriter(path, schema) as writer:
        for table in tables:
            writer.write_table(table)
    if durable:
        _fsync(path)


def _publish(source: Path, target: Path) -> None:
    os.link(source, target)  # atomic, and refuses an existing name


def _replace(source: Path, target: Path) -> None:
    os.replace(source, target)  # atomic: readers see the old file or the new one


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    """Flush a file's data, or a folder's entries (names linked, replaced or removed), to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BatchFolder:
    """A folder of parquet batch files written atomically and compacted (module docstring).

    ``compaction``: None keeps one file per batch.
    """

    def __init__(
        self,
        folder: Path,
        schema: pa.Schema,
        compaction: Compaction | None = DEFAULT_COMPACTION,
    ) -> None:
        self.folder = folder
        self.schema = schema
        self.compaction = compaction

    # -- listing -----------------------------------------------------------------------------
    def files(self) -> list[Path]:
        """The live files, in batch order."""
        return [span.path for span in live_spans(_spans(self.folder))[0]]

    def usage(self) -> FolderUsage:
        return folder_usage(self.folder)

    def _after_last(self) -> int:
        return max((span.last for span in _spans(self.folder)), default=0) + 1

    # -- appending ---------------------------------------------------------------------------
    def write(self, build: Callable[[int], pa.Table]) -> Path:
        """Publish ``build(seq)`` as the next batch file, ``seq`` being its sequence number, then
        run one compaction step (whose failure is logged: the batch is published either way).

        ``os.link`` refuses an existing name, so concurrent writers never overwrite each other;
        the loser rebuilds its table for the next number and tries again.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f"{_APPEND_TMP}{uuid.uuid4().hex}.parquet"
        try:
            # Shared lock from listing to publishing: otherwise a batch another writer published
            # under the same number could be merged away in between, the name be free again,
            # and this batch land inside the merged range (ignored as a merge input: lost).
            with self._locked(_NUMBERS_LOCK, wait=True, shared=True):
                target = self._publish_next(build, tmp)
        except OSError as exc:
            raise DependencyUnavailable(
                "offline store", f"cannot write {self.folder}: {exc}"
            ) from exc
        finally:
            tmp.unlink(missing_ok=True)
        if self.compaction is not None:
            try:
                self.compact()
            except (OSError, pa.ArrowException) as exc:
                log.warning("offline store: compaction of %s failed: %s", self.folder, exc)
        return target

    def _publish_next(self, build: Callable[[int], pa.Table], tmp: Path) -> Path:
        seq = self._after_last()
        while True:
            table = build(seq)
            # Built with the schema's own types, as the appenders here do: no cast needed.
            if not table.schema.equals(self.schema):
                table = table.cast(self.schema)
            _write_parquet([table], tmp, self.schema)
            target = self.folder / f"{seq:010d}.parquet"
            try:
                _publish(tmp, target)
                return target
            except FileExistsError:
                seq = max(seq + 1, self._after_last())

    def table(self, columns: dict[str, list[Any]]) -> pa.Table:
        """A table in this folder's schema from column lists (epoch milliseconds go straight
        into its timestamp columns' type: no cast afterwards)."""
        arrays = [pa.array(columns[f.name], type=f.type) for f in self.schema]
        return pa.Table.from_arrays(arrays, names=self.schema.names)

    def write_tables(self, tables: Sequence[pa.Table]) -> Path | None:
        """One batch file of several tables' rows, in order (None when they hold none)."""
        rows = [t for t in tables if t.num_rows]
        if not rows:
            return None
        table = pa.concat_tables(rows)
        return self.write(lambda _seq: table)

    # -- compaction --------------------------------------------------------------------------
    def compact(self) -> Path | None:
        """One merge if the policy asks for one; the merged file, or None (nothing to merge,
        compaction off, or another process holds the folder's lock)."""
        if self.compaction is None or not self.folder.exists():
            return None
        with self._locked(_LOCK, wait=False) as held:
            if not held:
                return None
            live = self._sweep()
            # Under the lock no live file goes away: only merges and removals remove files.
            plan = plan_merge([span.path.stat().st_size for span in live], self.compaction)
            if plan is None:
                return None
            inputs = live[plan[0] : plan[1]]
            if any(b.first != a.last + 1 for a, b in pairwise(inputs)):
                # Numbers are dense unless a file was removed by hand: never merge over a gap.
                log.warning("offline store: %s has a gap in its batch numbers", self.folder)
                return None
            return self._merge(inputs)

    def _merge(self, inputs: Sequence[Span]) -> Path:
        target = self.folder / f"{inputs[0].first:010d}-{inputs[-1].last:010d}.parquet"
        tmp = self.folder / f"{_MERGE_TMP}{uuid.uuid4().hex}.parquet"
        # No cleanup on failure: a merge that stops anywhere is finished by the next sweep,
        # exactly as after a crash. The merged file and its name are on disk before the inputs
        # go (a power cut must not lose rows either).
        _write_parquet(self._rechunked(inputs), tmp, self.schema, durable=True)
        _publish(tmp, target)
        _fsync(self.folder)
        _remove(tmp)
        self._free_numbers(inputs)
        return target

    def _free_numbers(self, covered: Sequence[Span]) -> None:
        """Remove merged inputs; their numbers are free again once they go, so never between an
        append's listing and its link (module docstring)."""
        if covered:
            with self._locked(_NUMBERS_LOCK, wait=True):
                for span in covered:
                    _remove(span.path)

    def _rechunked(self, inputs: Sequence[Span]) -> Iterator[pa.Table]:
        """The inputs' rows in order, in row groups of about ``_MERGE_ROW_GROUP_ROWS``."""
        pending: list[pa.Table] = []
        rows = 0
        for span in inputs:
            table = _read_whole(span.path, self.schema)
            pending.append(table)
            rows += table.num_rows
            if rows >= _MERGE_ROW_GROUP_ROWS:
                yield pa.concat_tables(pending).combine_chunks()
                pending, rows = [], 0
        if pending:
            yield pa.concat_tables(pending).combine_chunks()

    def _sweep(self) -> list[Span]:
        """Under the lock: remove what merges left behind (covered inputs, merge and rewrite
        temporaries) and stale append temporaries; the live spans."""
        live, covered = live_spans(_spans(self.folder))
        self._free_numbers(covered)
        stale_before = time.time() - _STALE_APPEND_S
        with os.scandir(self.folder) as entries:
            for entry in entries:
                name = entry.name
                if name.startswith((_MERGE_TMP, _REWRITE_TMP)) or (
                    name.startswith(_APPEND_TMP)
                    and _mtime(entry, default=stale_before) < stale_before
                ):
                    _remove(Path(entry.path))
        return live

    @contextlib.contextmanager
    def _locked(self, name: str, *, wait: bool, shared: bool = False) -> Iterator[bool]:
        """One of the folder's locks (``flock``, released when the descriptor closes, also by a
        crash; module docstring): exclusive, or ``shared``; yields False if ``wait`` is False and
        a conflicting holder has it."""
        fd = os.open(self.folder / name, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
                fcntl.flock(fd, mode | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    # -- reading -----------------------------------------------------------------------------
    def read(
        self,
        filters: list[tuple[str, str, Any]] | None = None,
        columns: list[str] | None = None,
    ) -> pa.Table:
        """Every live file's rows (those matching ``filters``), in batch order."""
        for _ in range(_READ_ATTEMPTS):
            files = self.files()
            if not files:
                empty = self.schema.empty_table()
                return empty.select(columns) if columns is not None else empty
            try:
                tables = [
                    pq.read_table(path, schema=self.schema, filters=filters, columns=columns)
                    for path in files
                ]
            except FileNotFoundError:
                continue  # merged away after the listing: the merged file is listed now
            except (OSError, pa.ArrowException) as exc:
                raise DependencyUnavailable(
                    "offline store", f"cannot read {self.folder}: {exc}"
                ) from exc
            return pa.concat_tables(tables)
        raise DependencyUnavailable(
            "offline store", f"{self.folder} changed under {_READ_ATTEMPTS} reads in a row"
        )

    def read_log(
        self,
        key: str,
        user_ids: Iterable[str] | None,
        start_ms: int | None,
        before_ms: int | None,
    ) -> pd.DataFrame:
        """An append-only log's rows (``user_id``, ``event_time_ms`` columns) of these users
        with ``start_ms <= event_time_ms < before_ms``, one per ``key`` (the first copy written
        wins: a batch appended again after a crash), ordered by (event time, ``key``)."""
        filters: list[tuple[str, str, Any]] = []
        if user_ids is not None:
            filters.append(("user_id", "in", list(user_ids)))
        if start_ms is not None:
            filters.append(("event_time_ms", ">=", start_ms))
        if before_ms is not None:
            filters.append(("event_time_ms", "<", before_ms))
        frame = self.read(filters or None).to_pandas()
        frame = frame.drop_duplicates(subset=key, keep="first")
        return frame.sort_values(["event_time_ms", key], kind="stable").reset_index(drop=True)

    # -- removal -----------------------------------------------------------------------------
    def remove_rows(self, column: str, value: str) -> int:
        """Rewrite every file holding ``column == value`` without those rows; rows removed."""
        if not self.folder.exists():
            return 0
        removed = 0
        with self._locked(_LOCK, wait=True):
            for span in self._sweep():
                hits = pc.fill_null(pc.equal(_column(span.path, column), value), False)
                count = pc.sum(hits).as_py() or 0
                if not count:
                    continue
                table = _read_whole(span.path, self.schema)
                matches = pc.fill_null(pc.equal(table.column(column), value), False)
                tmp = self.folder / f"{_REWRITE_TMP}{uuid.uuid4().hex}.parquet"
                kept = table.filter(pc.invert(matches))
                _write_parquet([kept], tmp, self.schema, durable=True)
                _replace(tmp, span.path)
                removed += count
        return removed


def folder_usage(folder: Path) -> FolderUsage:
    """Live files, their bytes and batches appended so far of a batch folder (none: zeros)."""
    spans = _spans(folder)
    live = live_spans(spans)[0]
    size = 0
    for span in live:
        with contextlib.suppress(FileNotFoundError):  # merged away since the listing
            size += span.path.stat().st_size
    return FolderUsage(len(live), size, max((s.last for s in spans), default=0))


def _spans(folder: Path) -> list[Span]:
    try:
        with os.scandir(folder) as entries:
            return [s for e in entries if (s := parse_span(Path(e.path))) is not None]
    except FileNotFoundError:
        return []


def _read_whole(path: Path, schema: pa.Schema) -> pa.Table:
    """A whole batch file in ``schema``. ``ParquetFile.read`` skips the dataset machinery that
    ``pq.read_table`` sets up for every file (about 2.5× the CPU for a batch-sized file); a file
    in another schema (an older writer's) still goes through ``read_table``, which fills and
    casts its columns."""
    table = pq.ParquetFile(path).read()
    if table.schema.equals(schema):
        return table
    return pq.read_table(path, schema=schema)


def _column(path: Path, column: str) -> pa.ChunkedArray:
    return pq.ParquetFile(path).read(columns=[column]).column(column)


def _mtime(entry: os.DirEntry[str], *, default: float) -> float:
    try:
        return entry.stat().st_mtime
    except FileNotFoundError:  # linked and removed by its writer since the listing
        return default
