"""The replay of ``aether bench live``: the future after ``T`` through the running system.

``plan_requests`` (pure) picks the requests: a seeded sample of users who are warm at ``T`` (at
least ``COLD_START_HISTORY`` ratings before it, as the offline temporal figures count them) and
rate something after it; each user's first ``events_per_user`` ratings after ``T`` whose item
the user has not rated before are requests (the offline protocol skips re-consumption the same
way), each with its point-in-time history (every rating of the user before it).

``replay`` walks the ratings after ``T`` in event-time order (the loader's order, as ``aether
replay`` publishes them) as fast as the requests allow. Ratings that are not requests are
produced to the live deployment's events topic in bulk; for a request, before its events are
published, the three arms are asked over gRPC with ``k`` items:

* **live** — the live server, for the user (features as fresh as the worker made them);
* **frozen** — the frozen server, for the same user (features as of ``T``);
* **popular** — the live server, for a user it has never seen, with the user's rated items in
  ``exclude_item_ids``: the non-personalised slate the product serves (popular and fresh items),
  seen items excluded.

With ``recall_probe`` the live server is asked once more with ``k = candidates`` (the whole
ranked candidate set): whether the target was retrieved at all. Then the request's events are
published, and a watch thread (``FreshnessWatch``) polls the live deployment's online row of the
user until it shows them: **freshness**, event produced → visible to serving. The replay goes on
meanwhile; it waits only before asking for a user whose previous request event is not visible
yet, so each live request sees that user's earlier requests' events.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from interactions.replay import CLICK_MIN_RATING, DISMISS_MAX_RATING, ReplayMessage
from interactions.sequences import SORT_KEYS

ARMS = ("live", "frozen", "popular")
ANONYMOUS_USER = "live-bench-anonymous"  # never in the data: the server knows nothing of it


@dataclass(frozen=True)
class Request:
    position: int  # index of the rating among the replayed ratings after T
    user_id: str
    item_id: str  # the target
    event_time_ms: int
    history: tuple[str, ...]  # the user's rated items before it, oldest first (point in time)


def plan_requests(
    ratings: pd.DataFrame,
    cutoff_ms: int,
    *,
    users: int,
    events_per_user: int,
    limit: int | None = None,
    min_history: int = 5,
    seed: int = 0,
) -> tuple[pd.DataFrame, list[Request]]:
    """The ratings to replay (at/after ``cutoff_ms``, the first ``limit``, in the loader's
    event-time order) and the requests among them, in replay order."""
    future = ratings[ratings["timestamp_ms"] >= cutoff_ms]
    future = future.iloc[:limit] if limit is not None else future
    future = future.reset_index(drop=True)
    past = ratings[ratings["timestamp_ms"] < cutoff_ms]
    warm = past["user_id"].value_counts()
    warm_users = set(warm.index[warm >= min_history])
    eligible = sorted(set(future["user_id"]) & warm_users)
    rng = np.random.default_rng(seed)
    chosen = set(rng.choice(eligible, size=min(users, len(eligible)), replace=False).tolist())
    histories: dict[str, list[str]] = {
        str(user): [str(i) for i in group["item_id"]]
        for user, group in past[past["user_id"].isin(chosen)]
        .sort_values(SORT_KEYS, kind="stable")
        .groupby("user_id", sort=False)
    }
    asked: dict[str, int] = {}
    requests: list[Request] = []
    for position, (user, item, t) in enumerate(
        zip(future["user_id"], future["item_id"], future["timestamp_ms"], strict=True)
    ):
        if user not in chosen:
            continue
        history = histories.setdefault(user, [])
        if item not in history and asked.get(user, 0) < events_per_user:
            requests.append(Request(position, user, item, int(t), tuple(history)))
            asked[user] = asked.get(user, 0) + 1
        history.append(item)
    return future, requests


def events_per_rating(ratings: pd.DataFrame) -> list[int]:
    """How many events ``interactions.replay.rating_events`` makes of each rating, in order."""
    values = ratings["rating"].astype(float).to_numpy()
    extra = (values >= CLICK_MIN_RATING) | (values <= DISMISS_MAX_RATING)
    return (2 + extra.astype(int)).tolist()


@dataclass
class Answer:
    items: tuple[str, ...]
    latency_ms: float
    fallback: bool


@dataclass
class Served:
    """What one request got from each arm, and what the live deployment knew when asked."""

    request: Request
    answers: dict[str, Answer]
    replay_s: float  # wall seconds since the replay started
    live_history: tuple[str, ...]  # the live row's recent_items when asked
    live_dismissed: tuple[str, ...]
    live_row_current: bool  # the live row already showed every earlier rating of the user
    candidates: tuple[str, ...] | None = None  # the recall probe's answer
    freshness_ms: float | None = None  # None: not visible within the timeout
    live_interactions: tuple[str, ...] = ()  # the live row's recent_interactions when asked


@dataclass
class ReplayLog:
    served: list[Served] = field(default_factory=list)
    ratings: int = 0
    events: int = 0
    seconds: float = 0.0
    freshness_timeouts: int = 0  # requests whose events were not seen in the live row in time
    stopped_early: bool = False  # max_seconds reached before the last request
    errors: dict[str, int] = field(default_factory=dict)


def _shows(row: object, item: str, last_event_dismiss: bool) -> bool:
    """Whether the user's row reflects the rating of ``item`` (its last event applied)."""
    if row is None:
        return False
    if last_event_dismiss:
        return item in row.dismissed_items  # type: ignore[attr-defined]
    return item in row.recent_items  # type: ignore[attr-defined]


class FreshnessWatch(threading.Thread):
    """Polls the live rows of the users whose request events were just published (one batched
    read per pass) and records, per request, the time from produce to visible. The replay does
    not wait for it, except before asking for a user whose previous event is not yet visible."""

    def __init__(
        self,
        read_rows: Callable[[list[str]], Mapping[str, object]],
        timeout_s: float,
        interval_s: float = 0.002,
    ) -> None:
        super().__init__(daemon=True, name="freshness-watch")
        self._read_rows, self._timeout_s, self._interval_s = read_rows, timeout_s, interval_s
        self._pending: dict[str, tuple[Served, bool, float]] = {}
        self._lock = threading.Lock()
        self._done = threading.Event()
        self.timeouts = 0

    def watch(self, served: Served, last_event_dismiss: bool, sent: float) -> None:
        with self._lock:
            self._pending[served.request.user_id] = (served, last_event_dismiss, sent)

    def pending(self, user: str) -> bool:
        with self._lock:
            return user in self._pending

    def run(self) -> None:
        while not self._done.is_set():
            with self._lock:
                waiting = dict(self._pending)
            if not waiting:
                time.sleep(self._interval_s)
                continue
            rows = self._read_rows(list(waiting))
            now = time.perf_counter()
            with self._lock:
                for user, (served, dismiss, sent) in waiting.items():
                    if _shows(rows.get(user), served.request.item_id, dismiss):
                        served.freshness_ms = (now - sent) * 1000
                    elif now - sent > self._timeout_s:
                        self.timeouts += 1
                    else:
                        continue
                    if self._pending.get(user, (None,))[0] is served:
                        del self._pending[user]
            time.sleep(self._interval_s)

    def drain(self, deadline_s: float) -> None:
        """Wait until nothing is pending (or ``deadline_s``), then stop."""
        end = time.perf_counter() + deadline_s
        while time.perf_counter() < end:
            with self._lock:
                if not self._pending:
                    break
            time.sleep(0.01)
        self._done.set()
        self.join(5)


def replay(
    future: pd.DataFrame,
    messages: Sequence[ReplayMessage],
    requests: Sequence[Request],
    *,
    produce: Callable[[ReplayMessage], None],
    flush: Callable[[], None],
    ask: Mapping[str, Callable[[Request], Answer]],
    read_live_rows: Callable[[list[str]], Mapping[str, object]],
    read_watched_rows: Callable[[list[str]], Mapping[str, object]] | None = None,
    probe: Callable[[Request], tuple[str, ...]] | None = None,
    freshness_timeout_s: float = 30.0,
    max_seconds: float | None = None,
    progress: Callable[[int, int], None] | None = None,
    set_clock: Callable[[int], None] | None = None,
) -> ReplayLog:
    """Replay ``future`` (``messages`` = its events, in order) and ask the arms for each request.

    ``set_clock(t)`` is called before the arms are asked, with ``t`` one millisecond before the
    request's event: the servers' serving time, so that their impressions precede the user's
    answer in event time (reward attribution credits it to them).

    The callables are the I/O (``benchmarks.live`` wires them to Kafka, gRPC and the online
    store; ``read_watched_rows``: the watch thread's own reader), so the order of asking,
    publishing and waiting is stated once, here. Before a
    request, its user's previous request event must be visible in the live row (the watch, up
    to ``freshness_timeout_s``); other users' events are not waited for. ``max_seconds`` stops
    the replay (and the requests) after that long: the figures are then those of the requests
    asked so far, in event-time order."""
    log = ReplayLog()
    by_position = {r.position: r for r in requests}
    counts = events_per_rating(future)
    dismissed = (future["rating"].astype(float) <= DISMISS_MAX_RATING).tolist()
    seen_before: dict[str, set[str]] = {}
    watch = FreshnessWatch(read_watched_rows or read_live_rows, freshness_timeout_s)
    watch.start()
    started = time.perf_counter()
    cursor = 0
    try:
        for position, n_events in enumerate(counts):
            request = by_position.get(position)
            batch = messages[cursor : cursor + n_events]
            cursor += n_events
            if request is None:
                for message in batch:
                    produce(message)
                continue
            if max_seconds is not None and time.perf_counter() - started > max_seconds:
                log.stopped_early = True
                break
            user = request.user_id
            flush()
            waited = time.perf_counter()
            while watch.pending(user) and time.perf_counter() - waited < freshness_timeout_s:
                time.sleep(0.002)
            row = read_live_rows([user]).get(user)
            history = tuple(getattr(row, "recent_items", ()) or ())
            dismissed_items = tuple(getattr(row, "dismissed_items", ()) or ())
            interactions = tuple(getattr(row, "recent_interactions", ()) or ())
            earlier = seen_before.setdefault(user, set())
            if set_clock is not None:
                set_clock(request.event_time_ms - 1)
            answers: dict[str, Answer] = {}
            for arm, call in ask.items():
                try:
                    answers[arm] = call(request)
                except Exception as exc:  # one failed call is counted, never stops the replay
                    log.errors[arm] = log.errors.get(arm, 0) + 1
                    print(f"{arm} request for {user} failed: {exc}")
            candidates = probe(request) if probe is not None else None
            served = Served(
                request,
                answers,
                time.perf_counter() - started,
                history,
                dismissed_items,
                earlier <= set(history) | set(dismissed_items),
                candidates,
                live_interactions=interactions,
            )
            sent = time.perf_counter()
            for message in batch:
                produce(message)
            flush()
            watch.watch(served, dismissed[position], sent)
            earlier.add(request.item_id)
            log.served.append(served)
            if progress is not None:
                progress(len(log.served), len(requests))
    finally:
        flush()
        watch.drain(freshness_timeout_s)
    log.freshness_timeouts = sum(s.freshness_ms is None for s in log.served)
    log.ratings, log.events = (position + 1 if counts else 0), cursor
    log.seconds = time.perf_counter() - started
    return log


def popular_excludes(request: Request, max_exclude: int) -> list[str]:
    """The user's rated items, newest first, at most ``max_exclude`` (the server's limit)."""
    return list(reversed(request.history))[:max_exclude]
