"""Size-tiered compaction of the offline logs' batch folders (``features.batch_folder``).

The merge policy is checked on sizes alone (hypothesis: bounds, invariant, rewrite cost); the
folder itself with real parquet files under random appends, merges and deletions, with a simulated
``kill -9`` at every file-system step a merge, an append or a deletion takes: after each
operation a fresh reader must see every row exactly once, in append order, and no file at all may
hold a row a finished deletion erased.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import ConfigError
from features import batch_folder
from features.batch_folder import (
    DEFAULT_COMPACTION,
    BatchFolder,
    Compaction,
    Span,
    live_spans,
    plan_merge,
)

SCHEMA = pa.schema([("row_id", pa.string()), ("user_id", pa.string())])
USERS = ("u1", "u2", "u3")


# -- the policy, on sizes ---------------------------------------------------------------------
def _simulate(sizes: list[int], compaction: Compaction) -> tuple[list[int], int]:
    """Append ``sizes`` one by one, one merge after each (sizes add up); the files left and the
    bytes the merges rewrote."""
    files: list[int] = []
    rewritten = 0
    for size in sizes:
        files.append(size)
        plan = plan_merge(files, compaction)
        if plan is not None:
            start, stop = plan
            merged = sum(files[start:stop])
            rewritten += merged
            files[start:stop] = [merged]
    return files, rewritten


def _digit_sum(n: int, base: int) -> int:
    total = 0
    while n:
        n, digit = divmod(n, base)
        total += digit
    return total


@given(n=st.integers(1, 400), fanout=st.integers(2, 6))
def test_equal_batches_compact_as_a_base_fanout_counter(n: int, fanout: int) -> None:
    compaction = Compaction(fanout=fanout, max_file_bytes=10**12, max_merge_files=64)
    files, rewritten = _simulate([1] * n, compaction)
    # ``fanout`` files of one size become one of the next: the files are n's digits in base fanout.
    assert (
        len(files) == _digit_sum(n, fanout) <= (fanout - 1) * (math.floor(math.log(n, fanout)) + 1)
    )
    assert files == sorted(files, reverse=True)
    # Each batch is rewritten once per level it climbs: at most log_fanout(n) times.
    assert rewritten <= n * math.floor(math.log(n, fanout) + 1e-9)


@given(
    sizes=st.lists(st.integers(1, 10**6), min_size=1, max_size=200),
    fanout=st.integers(2, 6),
    max_file_bytes=st.sampled_from([2 * 10**6, 10**12]),
)
def test_after_each_append_one_merge_restores_the_invariant(
    sizes: list[int], fanout: int, max_file_bytes: int
) -> None:
    compaction = Compaction(fanout=fanout, max_file_bytes=max_file_bytes, max_merge_files=10**6)
    files: list[int] = []
    for size in sizes:
        before = files
        files = _simulate_one(files, size, compaction)
        assert plan_merge(files, compaction) is None
        sealed = max((n + 1 for n, s in enumerate(files) if s >= max_file_bytes), default=0)
        tail = files[sealed:]
        if tail:
            # Each file outweighs 1/(fanout−1) of the newer ones, so the suffix sums grow by
            # fanout/(fanout−1) per file: a logarithmic number of files after the last sealed one.
            bound = 1 + math.log(sum(tail) / min(tail)) / math.log(fanout / (fanout - 1))
            assert len(tail) <= bound + 1e-9
        # What lies up to the last sealed file before this append is never rewritten.
        kept = max((n + 1 for n, s in enumerate(before) if s >= max_file_bytes), default=0)
        assert files[:kept] == before[:kept]
    assert sum(files) == sum(sizes)


def _simulate_one(files: list[int], size: int, compaction: Compaction) -> list[int]:
    files = [*files, size]
    plan = plan_merge(files, compaction)
    if plan is not None:
        start, stop = plan
        files[start:stop] = [sum(files[start:stop])]
    return files


def test_a_merge_reads_at_most_max_merge_files_and_a_long_backlog_catches_up() -> None:
    compaction = Compaction(fanout=4, max_file_bytes=10**12, max_merge_files=8)
    files = [1] * 100  # a folder written before compaction existed
    assert plan_merge(files, compaction) == (0, 8)
    appends = 0
    while plan_merge(files, compaction) is not None:
        files = _simulate_one(files, 1, compaction)
        appends += 1
    assert appends < 40 and len(files) <= 12


def test_sealed_files_are_never_merged_again() -> None:
    compaction = Compaction(fanout=2, max_file_bytes=100)
    assert plan_merge([100, 1], compaction) is None
    assert plan_merge([100, 1, 1], compaction) == (1, 3)
    assert plan_merge([50, 100, 60], compaction) is None  # 50 lies before a sealed file
    with pytest.raises(ConfigError):
        Compaction(fanout=1)


def test_a_file_inside_another_files_range_is_covered() -> None:
    def span(first: int, last: int) -> Span:
        return Span(first, last, Path(f"{first}-{last}"))

    live, covered = live_spans([span(5, 5), span(1, 4), span(2, 2), span(1, 8), span(9, 9)])
    assert [(s.first, s.last) for s in live] == [(1, 8), (9, 9)]
    assert sorted((s.first, s.last) for s in covered) == [(1, 4), (2, 2), (5, 5)]
    assert batch_folder.parse_span(Path("0000000003-0000000003.parquet")) is None
    assert batch_folder.parse_span(Path(".compact-0000000001.parquet")) is None


# -- the folder, with crashes ----------------------------------------------------------------------
class Crash(BaseException):
    """A simulated ``kill -9``: no handler in the code under test catches it."""


@contextlib.contextmanager
def crash_at(step: int | None) -> Iterator[None]:
    """Crash at the ``step``-th file-system change ``features.batch_folder`` makes (1-based): that
    change does not happen (a parquet write leaves a torn file behind), nor does any after it."""
    if step is None:
        yield
        return
    count = [0]
    with pytest.MonkeyPatch.context() as patch:
        for name in ("_write_parquet", "_publish", "_replace", "_remove"):
            real = getattr(batch_folder, name)

            def step_or_crash(*args: Any, _real: Any = real, _name: str = name, **kw: Any) -> Any:
                count[0] += 1
                if count[0] == step:
                    if _name == "_write_parquet":
                        Path(args[1]).write_bytes(b"PAR1 torn")
                    raise Crash
                return _real(*args, **kw)

            patch.setattr(batch_folder, name, step_or_crash)
        yield


def _ids(folder: BatchFolder) -> list[str]:
    return [str(v) for v in folder.read().column("row_id").to_pylist()]


def _ids_in_every_file(path: Path) -> set[str]:
    """Row ids held by any parquet file in the folder: live, covered or temporary."""
    ids: set[str] = set()
    for file in path.iterdir():
        with contextlib.suppress(pa.ArrowException, OSError):  # a torn file holds nothing
            ids.update(str(v) for v in pq.read_table(file).column("row_id").to_pylist())
    return ids


crashes = st.one_of(st.none(), st.integers(1, 10))
operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("append"), st.lists(st.sampled_from(USERS), min_size=1, max_size=5), crashes
        ),
        st.tuples(
            st.just("append"), st.lists(st.sampled_from(USERS), min_size=1, max_size=5), st.none()
        ),
        st.tuples(st.just("compact"), st.none(), crashes),
        st.tuples(st.just("delete"), st.sampled_from(USERS), crashes),
    ),
    max_size=30,
)


@settings(max_examples=60)
@given(
    ops=operations,
    compaction=st.sampled_from(
        [
            Compaction(fanout=2, max_file_bytes=10**9),
            Compaction(fanout=3, max_file_bytes=2_500, max_merge_files=3),
            DEFAULT_COMPACTION,
        ]
    ),
)
def test_rows_are_read_exactly_once_through_appends_merges_deletions_and_crashes(
    ops: list[tuple[str, Any, int | None]], compaction: Compaction
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "log"
        expected: list[tuple[str, str]] = []  # (row id, user), in append order
        erased: set[str] = set()
        for n, (op, arg, crash) in enumerate(ops):
            folder = BatchFolder(path, SCHEMA, compaction)  # a fresh process after each crash
            if op == "append":
                rows = [(f"r{n}-{k}", user) for k, user in enumerate(arg)]
                columns = {"row_id": [r for r, _ in rows], "user_id": [u for _, u in rows]}
                with crash_at(crash), contextlib.suppress(Crash):
                    folder.write_tables([folder.table(columns)])
                # The batch is published unless the crash hit its own write (step 1) or link
                # (step 2); a crash in the merge after it leaves the batch in.
                if crash is None or crash > 2:
                    expected += rows
            elif op == "compact":
                with crash_at(crash), contextlib.suppress(Crash):
                    folder.compact()
            else:
                keep = [row for row in expected if row[1] != arg]
                with crash_at(crash):
                    try:
                        folder.remove_rows("user_id", arg)
                    except Crash:
                        # Part of the user's rows may be gone; every other row is there once.
                        seen = _ids(BatchFolder(path, SCHEMA, compaction))
                        assert [i for i in seen if i in {r for r, _ in keep}] == [
                            r for r, _ in keep
                        ]
                        # The worker runs the erasure again (its marker was not committed).
                        BatchFolder(path, SCHEMA, compaction).remove_rows("user_id", arg)
                erased |= {row_id for row_id, user in expected if user == arg}
                expected = keep
                assert not (_ids_in_every_file(path) & erased) if path.exists() else True
            assert _ids(BatchFolder(path, SCHEMA, compaction)) == [r for r, _ in expected]


def test_many_small_batches_leave_a_logarithmic_number_of_files(tmp_path: Path) -> None:
    folder = BatchFolder(tmp_path, SCHEMA)  # the defaults the worker runs with
    for n in range(300):
        folder.write_tables([folder.table({"row_id": [f"r{n}"], "user_id": [USERS[n % 3]]})])
        sizes = [p.stat().st_size for p in folder.files()]
        assert plan_merge(sizes, DEFAULT_COMPACTION) is None  # each append's merge restored it
    assert _ids(folder) == [f"r{n}" for n in range(300)]
    usage = folder.usage()
    assert usage.batches == 300
    assert usage.files == len(folder.files()) <= 3 * (math.ceil(math.log(300, 4)) + 1)
    assert usage.bytes == sum(p.stat().st_size for p in folder.files())
    locks = [".lock", ".numbers.lock"]  # no temporary file left, only the folder's locks
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == locks


def test_without_compaction_every_batch_keeps_its_file(tmp_path: Path) -> None:
    folder = BatchFolder(tmp_path, SCHEMA, compaction=None)
    for n in range(6):
        folder.write_tables([folder.table({"row_id": [f"r{n}"], "user_id": ["u1"]})])
    assert folder.compact() is None
    assert [p.name for p in folder.files()] == [f"{n:010d}.parquet" for n in range(1, 7)]


def test_merged_files_are_named_by_their_batch_range_and_new_batches_come_after(
    tmp_path: Path,
) -> None:
    folder = BatchFolder(tmp_path, SCHEMA, Compaction(fanout=2))
    names = []
    for n in range(3):
        names.append(
            folder.write_tables([folder.table({"row_id": [f"r{n}"], "user_id": ["u1"]})]).name
        )
    assert names == ["0000000001.parquet", "0000000002.parquet", "0000000003.parquet"]
    # 1+2 merged after the second append, 3 stays alone until a fourth batch evens it out
    assert [p.name for p in folder.files()] == [
        "0000000001-0000000002.parquet",
        "0000000003.parquet",
    ]
    assert _ids(folder) == ["r0", "r1", "r2"]


def test_a_crash_between_publishing_a_merge_and_removing_its_inputs_is_read_once_and_swept(
    tmp_path: Path,
) -> None:
    folder = BatchFolder(tmp_path, SCHEMA, Compaction(fanout=2))
    folder.write_tables([folder.table({"row_id": ["a"], "user_id": ["u1"]})])
    # steps: the batch's write and link, the merge's write, link, temporary's removal; then
    # the crash, as the first input is about to be removed
    with crash_at(6), contextlib.suppress(Crash):
        folder.write_tables([folder.table({"row_id": ["b"], "user_id": ["u2"]})])
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "0000000001-0000000002.parquet" in names and "0000000001.parquet" in names
    assert _ids(folder) == ["a", "b"]
    assert folder.remove_rows("user_id", "u1") == 1  # sweeps the inputs first
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [".lock", ".numbers.lock", "0000000001-0000000002.parquet"]
    assert _ids(folder) == ["b"]


def test_deletion_sweeps_stale_append_temporaries_only(tmp_path: Path) -> None:
    folder = BatchFolder(tmp_path, SCHEMA)
    folder.write_tables([folder.table({"row_id": ["a"], "user_id": ["u1"]})])
    stale, fresh = tmp_path / ".tmp-stale.parquet", tmp_path / ".tmp-fresh.parquet"
    for orphan in (stale, fresh):
        pq.write_table(pa.table({"row_id": ["x"], "user_id": ["u1"]}, schema=SCHEMA), orphan)
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    folder.remove_rows("user_id", "u1")
    assert not stale.exists() and fresh.exists()  # fresh: perhaps another writer's, mid-append


def test_concurrent_writers_a_reader_and_deletions_see_every_row_once(tmp_path: Path) -> None:
    compaction = Compaction(fanout=2)
    writers, batches = 3, 25
    failures: list[BaseException] = []
    done = threading.Event()

    def write(w: int) -> None:
        folder = BatchFolder(tmp_path, SCHEMA, compaction)  # one per writer, as processes would
        try:
            for n in range(batches):
                folder.write_tables(
                    [folder.table({"row_id": [f"w{w}-{n}"], "user_id": [f"user{w}"]})]
                )
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    def read() -> None:
        folder = BatchFolder(tmp_path, SCHEMA, compaction)
        try:
            while not done.is_set():
                ids = _ids(folder)
                assert len(ids) == len(set(ids)), "a row read twice"
                for w in range(writers):  # each writer's rows in its own order, a prefix
                    mine = [i for i in ids if i.startswith(f"w{w}-")]
                    assert mine == [f"w{w}-{n}" for n in range(len(mine))]
                BatchFolder(tmp_path, SCHEMA, compaction).remove_rows("user_id", "nobody")
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    reader = threading.Thread(target=read)
    reader.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    reader.join()
    assert not failures, failures
    ids = _ids(BatchFolder(tmp_path, SCHEMA))
    assert sorted(ids) == sorted(f"w{w}-{n}" for w in range(writers) for n in range(batches))


@contextlib.contextmanager
def merges_held() -> Iterator[tuple[threading.Event, threading.Event]]:
    """Every merge stops before writing its file, until ``release`` is set; ``started`` is set
    once one has stopped there."""
    started, release = threading.Event(), threading.Event()
    real = batch_folder._write_parquet

    def held(tables: Any, path: Path, schema: pa.Schema, *, durable: bool = False) -> None:
        if path.name.startswith(batch_folder._MERGE_TMP):
            started.set()
            assert release.wait(30), "the test never released the merge"
        real(tables, path, schema, durable=durable)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(batch_folder, "_write_parquet", held)
        try:
            yield started, release
        finally:
            release.set()


def test_an_append_does_not_wait_for_a_merge_in_progress(tmp_path: Path) -> None:
    """Appends wait only for a merge's unlinks, not its reading, writing and flushing (the
    folder's two locks)."""
    merging = BatchFolder(tmp_path, SCHEMA, Compaction(fanout=2))
    appending = BatchFolder(tmp_path, SCHEMA, compaction=None)  # another process's appender
    appending.write_tables([appending.table({"row_id": ["a"], "user_id": ["u1"]})])
    appending.write_tables([appending.table({"row_id": ["b"], "user_id": ["u1"]})])
    with merges_held() as (started, release):
        merge = threading.Thread(target=merging.compact)
        merge.start()
        assert started.wait(30)
        append = threading.Thread(
            target=appending.write_tables,
            args=([appending.table({"row_id": ["c"], "user_id": ["u2"]})],),
        )
        append.start()
        append.join(30)
        appended_during_the_merge = not append.is_alive()
        release.set()
        merge.join(30)
        append.join(30)
    assert appended_during_the_merge
    assert [p.name for p in appending.files()] == [
        "0000000001-0000000002.parquet",
        "0000000003.parquet",
    ]
    assert _ids(appending) == ["a", "b", "c"]
