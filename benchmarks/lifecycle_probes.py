"""What ``aether bench lifecycle`` measures against a running system: when a new item's rows reach
the stores the worker writes, when it first becomes receivable, how long serving's catalogue
refreshes take, and what the responses around a release swap look like.

**Receivable.** Each new item is published with a category of its own (``bench-new-<n>``); the
probe asks ``Recommend(k=1, include_categories=[that category])`` until the answer holds the item.
The category filter leaves exactly one eligible item, so the answer holds it as soon as the
serving catalogue does (the popular and fresh sources walk the whole catalogue under filters):
"the first time a request can receive it", measured from just before the item is produced.
The resolution is one probe round (every pending item asked once, a few requests in flight at a
time); the rounds' durations are reported with the figures.

**In the stores.** ``StoreProbe`` polls, for every published item not yet found, each store the
worker writes: the content collection in Milvus (the catalogue agent's embedded row) and the
online item row in Redis (the item-features agent). The first time each holds the item, measured
from the same publish instant as above, splits the end-to-end time into the worker's part and
serving's (its catalogue refresh finds the item in either store).

**Refreshes.** Serving times each background refresh in a Prometheus histogram
(``aether_catalogue_refresh_seconds``, and per step ``aether_catalogue_refresh_step_seconds``,
``serving.live_state``); ``refresh_figures`` reads two scrapes of ``/metrics`` and estimates
quantiles of what happened in between from the buckets, as PromQL's ``histogram_quantile`` does
(linear inside a bucket: the resolution is the bucket's width).

**Swap.** ``SwapLoad`` sends ``Recommend`` at a fixed rate from several threads (each paces its
own share; a late request is sent at once, not skipped, so the rate offered is the one asked for
until the server falls behind) and keeps every answer: the label, the scores, the latency, or
the error. ``mixed_responses`` checks each answer against the release it names: the new model's
label with scores that are not that model's, or the old label with the new model's scores.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


# -- new items ------------------------------------------------------------------------------------
def new_item_category(n: int) -> str:
    return f"bench-new-{n}"


@dataclass
class ReceivableProbe:
    """Asks, round after round, for every published item not seen yet (``published``)."""

    recommend: Callable[..., object]  # RecommenderClient.recommend (thread-safe)
    user_id: str = "bench-probe"
    parallel: int = 8  # requests of one round in flight at once
    published: dict[str, tuple[int, float]] = field(default_factory=dict)  # item -> (n, t0)
    receivable_s: dict[str, float] = field(default_factory=dict)
    round_s: list[float] = field(default_factory=list)  # each round's duration: the resolution
    errors: int = 0

    def publish(self, item_id: str, n: int) -> None:
        """Called just before the item is produced."""
        self.published[item_id] = (n, time.monotonic())

    def pending(self) -> list[str]:
        return [i for i in list(self.published) if i not in self.receivable_s]

    def round(self) -> None:
        """Ask once for every pending item, ``parallel`` requests at a time."""
        started = time.monotonic()
        pending = self.pending()
        if pending:
            with ThreadPoolExecutor(min(self.parallel, len(pending))) as pool:
                list(pool.map(self._ask, pending))
        self.round_s.append(time.monotonic() - started)

    def _ask(self, item_id: str) -> None:
        n, published_at = self.published[item_id]
        try:
            slate = self.recommend(self.user_id, 1, include_categories=[new_item_category(n)])
        except Exception:  # a failed probe is retried next round, and counted
            self.errors += 1
            return
        if any(i.item_id == item_id for i in slate.items):  # type: ignore[attr-defined]
            self.receivable_s[item_id] = time.monotonic() - published_at


@dataclass
class StoreProbe:
    """Polls ``lookups`` (store name -> the ids among those asked that the store holds) for the
    items of ``published`` (``ReceivableProbe.published``) each store does not hold yet."""

    published: Mapping[str, tuple[int, float]]
    lookups: Mapping[str, Callable[[Sequence[str]], Iterable[str]]]
    found_s: dict[str, dict[str, float]] = field(default_factory=dict)  # store -> item -> s
    errors: int = 0
    clock: Callable[[], float] = time.monotonic  # the clock ``published`` was stamped with

    def round(self) -> None:
        for store, holds in self.lookups.items():
            found = self.found_s.setdefault(store, {})
            pending = [i for i in list(self.published) if i not in found]
            if not pending:
                continue
            try:
                present = set(holds(pending))
            except Exception:  # a failed poll is retried next round, and counted
                self.errors += 1
                continue
            now = self.clock()
            for item in present.intersection(pending):
                found[item] = now - self.published[item][1]

    def first_found_s(self) -> dict[str, float]:
        """Per item, when the first of the stores held it."""
        first: dict[str, float] = {}
        for found in self.found_s.values():
            for item, at in found.items():
                first[item] = min(at, first.get(item, math.inf))
        return first


# -- serving's refreshes ---------------------------------------------------------------------------
@dataclass
class Series:
    """One histogram series of a ``/metrics`` page: cumulative counts by upper bound, and sum."""

    buckets: dict[float, float] = field(default_factory=dict)
    sum: float = 0.0

    def since(self, before: Series) -> Series:
        """The observations made after ``before`` was scraped."""
        return Series(
            {le: n - before.buckets.get(le, 0.0) for le, n in self.buckets.items()},
            self.sum - before.sum,
        )

    @property
    def count(self) -> float:
        return self.buckets.get(math.inf, 0.0)

    def mean(self) -> float:
        return self.sum / self.count if self.count > 0 else math.nan

    def quantile(self, q: float) -> float:
        """Quantile ``q`` (0..1), linear inside a bucket as PromQL's ``histogram_quantile``;
        in the ``+Inf`` bucket, its lower bound; NaN with no observations."""
        if self.count <= 0:
            return math.nan
        rank = q * self.count
        lower, below = 0.0, 0.0
        for bound in sorted(self.buckets):
            count = self.buckets[bound]
            if count >= rank:
                if math.isinf(bound):
                    return lower
                inside = count - below
                return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
            lower, below = bound, count
        return lower


def histogram_series(metrics_text: str, name: str) -> dict[tuple[tuple[str, str], ...], Series]:
    """Histogram ``name`` of a ``/metrics`` page, per label set (``le`` left out)."""
    from prometheus_client.parser import text_string_to_metric_families

    found: dict[tuple[tuple[str, str], ...], Series] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name != name:
            continue
        for sample in family.samples:
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
            series = found.setdefault(labels, Series())
            if sample.name == f"{name}_bucket":
                series.buckets[float(sample.labels["le"])] = sample.value
            elif sample.name == f"{name}_sum":
                series.sum = sample.value
    return found


def refresh_figures(before_text: str, after_text: str) -> dict[str, float]:
    """Over the refreshes between two scrapes: ``serve_refresh_passes`` and
    ``serve_refresh_mean_s``/``_p50_s``/``_p99_s`` over all passes; the same per kind of pass
    (``serve_refresh_full_*``, ``serve_refresh_incremental_*``: the ``pass`` label) and per step
    (``serve_refresh_<step>_*``)."""
    figures: dict[str, float] = {}
    passes = _since(before_text, after_text, "aether_catalogue_refresh_seconds")
    every = Series()
    for labels, series in sorted(passes.items()):
        for le, count in series.buckets.items():
            every.buckets[le] = every.buckets.get(le, 0.0) + count
        every.sum += series.sum
        kind = dict(labels).get("pass")
        if kind is not None:
            figures[f"serve_refresh_{kind}_passes"] = series.count
            figures.update(_summary(f"serve_refresh_{kind}", series))
    figures["serve_refresh_passes"] = every.count
    figures.update(_summary("serve_refresh", every))
    steps = _since(before_text, after_text, "aether_catalogue_refresh_step_seconds")
    for labels, series in sorted(steps.items()):
        figures.update(_summary(f"serve_refresh_{dict(labels)['step']}", series))
    return figures


def _since(
    before_text: str, after_text: str, name: str
) -> dict[tuple[tuple[str, str], ...], Series]:
    before = histogram_series(before_text, name)
    return {
        labels: series.since(before.get(labels, Series()))
        for labels, series in histogram_series(after_text, name).items()
    }


def _summary(prefix: str, series: Series) -> dict[str, float]:
    return {
        f"{prefix}_mean_s": series.mean(),
        f"{prefix}_p50_s": series.quantile(0.50),
        f"{prefix}_p99_s": series.quantile(0.99),
    }


# -- the swap ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Answer:
    user_id: str
    sent_s: float  # monotonic
    latency_ms: float
    label: str | None  # None: the request failed
    scores: tuple[tuple[str, float], ...] = ()
    fallback: bool = False
    error: str = ""


class SwapLoad:
    """``rate`` requests per second over ``threads`` client threads until ``stop()``."""

    def __init__(
        self,
        new_client: Callable[[], object],
        users: Sequence[str],
        rate: float,
        threads: int = 8,
        k: int = 10,
    ) -> None:
        self._new_client = new_client
        self._users = list(users)
        self._interval_s = threads / rate
        self._k = k
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.answers: list[Answer] = []
        self._threads = [
            threading.Thread(target=self._loop, args=(n,), name=f"swap-load-{n}", daemon=True)
            for n in range(threads)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def count(self, label: str | None = None) -> int:
        with self._lock:
            return sum(1 for a in self.answers if label is None or a.label == label)

    def _loop(self, n: int) -> None:
        client = self._new_client()
        offset = self._interval_s * n / len(self._threads)
        next_at = time.monotonic() + offset
        m = n
        try:
            while not self._stop.is_set():
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                next_at += self._interval_s
                user = self._users[m % len(self._users)]
                m += len(self._threads)
                self._record(client, user)
        finally:
            client.close()  # type: ignore[attr-defined]

    def _record(self, client: object, user: str) -> None:
        sent = time.monotonic()
        try:
            slate = client.recommend(user, self._k)  # type: ignore[attr-defined]
        except Exception as exc:  # every failed call is an error of the swap
            answer = Answer(user, sent, (time.monotonic() - sent) * 1000, None, error=str(exc))
        else:
            answer = Answer(
                user,
                sent,
                (time.monotonic() - sent) * 1000,
                slate.model_version,
                tuple((i.item_id, i.score) for i in slate.items),
                slate.fallback,
            )
        with self._lock:
            self.answers.append(answer)


class Scorer(Protocol):
    """The new release's ranker as the server runs it: ``score(history, items)``."""

    @property
    def vocabulary(self) -> frozenset[str]: ...

    def score(self, history: Sequence[str], items: Sequence[str]) -> np.ndarray: ...


def mixed_responses(
    answers: Sequence[Answer],
    old_label: str,
    new_label: str,
    new_ranker: Scorer,
    histories: Mapping[str, Sequence[str]],
    tolerance: float = 1e-3,
) -> list[Answer]:
    """Answers inconsistent with the release they name (module docstring). Only the scores of
    items the new model knows are compared (items new since its training are scored otherwise);
    an answer with none of those is judged by its label alone."""
    mixed: list[Answer] = []
    expected: dict[str, dict[str, float]] = {}
    for answer in answers:
        if answer.label is None:
            continue  # an error, counted as one
        if answer.label not in (old_label, new_label):
            mixed.append(answer)
            continue
        known = [(i, s) for i, s in answer.scores if i in new_ranker.vocabulary]
        if not known:
            continue
        want = expected.setdefault(answer.user_id, {})
        missing = [i for i, _ in known if i not in want]
        if missing:
            scores = new_ranker.score(histories[answer.user_id], missing)
            want.update(zip(missing, (float(s) for s in scores), strict=True))
        matches = all(abs(s - want[i]) <= tolerance * max(1.0, abs(s)) for i, s in known)
        if matches != (answer.label == new_label):
            mixed.append(answer)
    return mixed


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else float("nan")
