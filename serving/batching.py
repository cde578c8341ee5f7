"""Micro-batching across concurrent requests: one call for the requests that meet at a point.

Requests run on the gRPC worker threads, each through the whole pipeline. At five points their
work is the same call with different arguments, and one call for several of them costs little
more than one: the user feature rows (one Redis round trip for every user), the user vectors (one
SASRec pass over the ragged histories, ``SASRecRanker.encode_users``), the ANN search (one
Milvus search with ``nq`` = the batch, ``retrieval.index_search.IndexSearch.search_group``), the
co-occurrence neighbours (one script call for every request's anchors,
``features.transition_store.RedisTransitionStore.read_batch``) and the posteriors of the
exploration pools (one Redis pipeline, ``serving.exploration_slots.RedisPosteriorReader
.read_batch``). The pipeline calls the first two itself; the other three are sent here by the
ANN index, the transition store and the posterior reader (``batch_searches``, ``batch_reads``:
``serving.build_pipeline.request_batching`` wires them).

``MicroBatcher`` has no thread of its own (leader/follower): the first request to reach a point
with no batch open for its key opens one and becomes its leader; requests that reach the point
meanwhile join it and wait. The leader waits while someone may still join, then runs the one
call for everyone on its own thread and hands each member its answer. It waits

* not at all when nothing else is in flight: no request is *expected* at this point (``expect``:
  requests already inside the pipeline that have not reached it) and no batch of the same key is
  running (a running one ends soon and its requesters' successors come right after it);
* otherwise until the batch is full (``max_size``), or nobody can join any more, or the window
  (``window_s``, ``serving.batch_window_ms``) has passed since it opened, or the earliest
  deadline of its members has come, whichever is first.

Requests are counted as expected at the user-vector and ANN points only (``RequestBatching
.expected``); at the co-occurrence and posterior points nobody is, so a read waits only while
another read of its key runs, and joins the reads that arrive meanwhile: batching there costs an
idle server nothing.

A batch never mixes keys: the pipeline keys user vectors by the serving release the request
read (``ServingState.release``), so each vector comes from the encoder of the release whose
``model_version`` the response names, and searches by collection and shared filter. A failed
call fails every member as the single call would have (each request flags its fallback, as
before); ``isolated`` re-runs an in-process call item by item instead, so that one bad item
fails alone. Batch sizes are exported as ``aether_serving_batch_size{stage}`` (one observation
per batch).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

import numpy as np

from features.ports import OnlineFeatureReader
from features.rows import UserFeatureRow
from serving.release import ServingRelease
from serving.server_metrics import BATCH_SIZE

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
R = TypeVar("R")

# A batch's call: (key, items) -> one answer per item, in order; an exception in place of an
# answer fails that item alone; an exception raised fails them all.
BatchCall = Callable[[K, list[T]], Sequence[R | BaseException]]


class Expected:
    """A request that will reach a batch point, or leave without it (``done``, idempotent)."""

    __slots__ = ("_batcher", "_done")

    def __init__(self, batcher: MicroBatcher[Any, Any, Any]) -> None:
        self._batcher = batcher
        self._done = False

    def done(self) -> None:
        with self._batcher._changed:
            self._done_locked()

    def _done_locked(self) -> None:
        if not self._done:
            self._done = True
            self._batcher._expected -= 1
            self._batcher._changed.notify_all()


class _Batch(Generic[T, R]):
    __slots__ = ("answers", "deadline", "finished", "items", "opened")

    def __init__(self, opened: float) -> None:
        self.opened = opened
        self.deadline = float("inf")
        self.items: list[T] = []
        self.answers: Sequence[R | BaseException] = ()
        self.finished = threading.Event()

    def answer(self, slot: int) -> R:
        answer = self.answers[slot]
        if isinstance(answer, BaseException):
            raise answer
        return answer


class MicroBatcher(Generic[K, T, R]):
    """Runs ``call`` once for the concurrent ``submit``s of one key (module docstring)."""

    def __init__(
        self,
        stage: str,
        call: BatchCall[K, T, R],
        *,
        window_s: float,
        max_size: int = 32,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window_s < 0 or max_size < 1:
            raise ValueError("window_s must be >= 0 and max_size >= 1")
        self.stage = stage
        self.window_s = window_s
        self.max_size = max_size
        self._call = call
        self._clock = clock
        self._changed = threading.Condition()
        self._open: dict[K, _Batch[T, R]] = {}
        self._running: Counter[K] = Counter()
        self._expected = 0
        self._sizes = BATCH_SIZE.labels(stage=stage)

    def expect(self) -> Expected:
        """Count one request as on its way here; it is done when it submits or calls ``done``."""
        with self._changed:
            self._expected += 1
        return Expected(self)

    def submit(
        self,
        key: K,
        item: T,
        *,
        deadline_s: float | None = None,
        expected: Expected | None = None,
    ) -> R:
        """``item``'s answer from the call of the batch it joins (its exception, if it failed).
        ``deadline_s``: the request's remaining time; the batch does not wait past it."""
        now = self._clock()
        with self._changed:
            if expected is not None:
                expected._done_locked()
            batch = self._open.get(key)
            leader = batch is None or len(batch.items) >= self.max_size
            if leader:
                batch = self._open[key] = _Batch(now)
            assert batch is not None
            slot = len(batch.items)
            batch.items.append(item)
            if deadline_s is not None:
                batch.deadline = min(batch.deadline, now + deadline_s)
            if leader:
                self._gather(key, batch)
            else:
                self._changed.notify_all()  # the leader may be waiting for this one
        if leader:
            self._run(key, batch)
        else:
            batch.finished.wait()
        return batch.answer(slot)

    def _gather(self, key: K, batch: _Batch[T, R]) -> None:
        """Wait (lock held) while someone may still join, then close the batch."""
        closes = batch.opened + self.window_s
        while len(batch.items) < self.max_size and (self._expected > 0 or self._running[key]):
            left = min(closes, batch.deadline) - self._clock()  # a joiner may bring it forward
            if left <= 0:
                break
            self._changed.wait(left)
        if self._open.get(key) is batch:
            del self._open[key]
        self._running[key] += 1

    def _run(self, key: K, batch: _Batch[T, R]) -> None:
        self._sizes.observe(len(batch.items))
        try:
            answers = self._call(key, batch.items)
            if len(answers) != len(batch.items):
                raise RuntimeError(
                    f"{self.stage} batch call gave {len(answers)} answers for "
                    f"{len(batch.items)} items"
                )
            batch.answers = answers
        except BaseException as exc:  # every member fails as the one call did
            batch.answers = [exc] * len(batch.items)
        finally:
            with self._changed:
                self._running[key] -= 1
                if not self._running[key]:
                    del self._running[key]
                self._changed.notify_all()
            batch.finished.set()


def isolated(
    call: Callable[[list[T]], Sequence[R]], one: Callable[[T], R]
) -> Callable[[list[T]], list[R | BaseException]]:
    """``call`` on the whole batch; if it raises, ``one`` on each item, so that a bad item fails
    alone (for in-process work only: a dependency that is down would be asked once per item)."""

    def run(items: list[T]) -> list[R | BaseException]:
        try:
            return list(call(items))
        except Exception:
            answers: list[R | BaseException] = []
            for item in items:
                try:
                    answers.append(one(item))
                except Exception as exc:
                    answers.append(exc)
            return answers

    return run


# -- the pipeline's batch points -------------------------------------------------------------


def encode_batch(release: ServingRelease, histories: list[tuple[str, ...]]) -> list[object]:
    """User vectors of ``histories`` with ``release``'s encoder: one ``encode_users`` pass where
    the encoder has one (``SASRecRanker``), else (or for one history) ``encode_user`` each; item
    by item if the batch fails."""
    encoder = release.encoder
    assert encoder is not None, "the pipeline encodes only with a release that has an encoder"
    encode_users = getattr(encoder, "encode_users", None)

    def together(items: list[tuple[str, ...]]) -> list[np.ndarray | None]:
        if encode_users is None or len(items) == 1:  # one: as without batching
            return [encoder.encode_user(h) for h in items]
        return list(encode_users(items))

    return list(isolated(together, encoder.encode_user)(histories))


class RequestBatching:
    """The pipeline's batch points (``RecommendationPipeline(batching=...)``): the user feature
    rows and the user vectors, plus the index's search batcher when there is one (the pipeline
    only counts its requests there: the ANN source submits its searches itself)."""

    def __init__(
        self,
        features: OnlineFeatureReader,
        *,
        window_s: float,
        max_size: int = 32,
        searches: MicroBatcher[Any, Any, Any] | None = None,
    ) -> None:
        self._features = features
        self.users: MicroBatcher[None, str, UserFeatureRow | None] = MicroBatcher(
            "features", self._read_users, window_s=window_s, max_size=max_size
        )
        self.vectors: MicroBatcher[ServingRelease, tuple[str, ...], np.ndarray | None]
        self.vectors = MicroBatcher(
            "user_vector",
            encode_batch,  # type: ignore[arg-type]
            window_s=window_s,
            max_size=max_size,
        )
        self.searches = searches

    def _read_users(self, _key: None, user_ids: list[str]) -> list[UserFeatureRow | None]:
        rows = self._features.read_users(user_ids)
        return [rows.get(user_id) for user_id in user_ids]

    @contextmanager
    def expected(self) -> Iterator[Expected]:
        """One request on its way to the user-vector point (and, counted until the block ends,
        to the ANN search): end the block when it asks its candidate sources."""
        vector = self.vectors.expect()
        search = self.searches.expect() if self.searches is not None else None
        try:
            yield vector
        finally:
            vector.done()
            if search is not None:
                search.done()
