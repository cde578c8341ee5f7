"""Prometheus metrics of the stream worker (``prometheus_client``, the process-wide registry)."""

from __future__ import annotations

import gc
import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter(
    "aether_stream_events",
    "Source events by topic and outcome (applied, duplicate, late, dead_letter, suppressed).",
    ["topic", "outcome"],
)
DEAD_LETTERS = Counter(
    "aether_stream_dead_letters", "Events sent to the dead-letter topic, by reason.", ["reason"]
)
LATE_EVENTS = Counter(
    "aether_stream_late_events", "Events beyond the allowed lateness, by source topic.", ["topic"]
)
ROWS_WRITTEN = Counter(
    "aether_stream_feature_rows", "Feature rows written to the online store.", ["entity"]
)
BATCH_SECONDS = Histogram(
    "aether_stream_batch_seconds",
    "Time to process one batch, by agent.",
    ["agent"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
STAGE_CPU = Counter(
    "aether_stream_stage_cpu_seconds",
    "CPU time of the thread that ran each stage of batch handling (STAGES); the process's "
    "other CPU time is Faust's consumption, the event loop and the metrics.",
    ["stage"],
)
# What ``stage_cpu`` measures, none inside another: each step's decode, state load and pure step
# by side; the feature rows, state commits and messages produced of every agent; the offline
# sinks' parquet appends and compaction (in a worker thread).
STAGES = (
    "user_step",
    "item_step",
    "attribution",
    "posteriors",
    "drift",
    "feature_rows",
    "state_commit",
    "produce",
    "offline_sinks",
)
EVENTS_BY_TYPE = Counter(
    "aether_stream_events_by_type", "Applied interaction events by type.", ["event_type"]
)
OFFLINE_ROWS = Counter(
    "aether_offline_rows_flushed",
    "Offline rows moved from their outbox in Redis into parquet (streams.sinks).",
    ["outbox"],
)
OFFLINE_FLUSH_FAILURES = Counter(
    "aether_offline_flush_failures",
    "Flushes of the offline outboxes that failed (their entries stay for the next flush).",
)
CONSUMER_LAG_RECORDS = Gauge(
    "aether_stream_consumer_lag_records",
    "Records behind the end of the topic, summed over this worker's partitions.",
    ["topic"],
)
CONSUMER_LAG_SECONDS = Gauge(
    "aether_stream_consumer_lag_seconds",
    "How far behind the log the worker is in time: now minus the broker timestamp of the last "
    "record handled, while records are waiting (0 when caught up).",
    ["topic"],
)
FRESHNESS = Histogram(
    "aether_stream_freshness_seconds",
    "A record's broker timestamp to its features committed to Redis.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0),
)
BANDIT_IMPRESSIONS = Counter(
    "aether_bandit_impressions", "Shown slots decided by reward attribution, by arm.", ["arm"]
)
BANDIT_REWARDS = Counter(
    "aether_bandit_rewards", "Shown slots with an attributed click, by arm.", ["arm"]
)
BANDIT_DISMISSALS = Counter(
    "aether_bandit_dismissals", "Shown slots decided by a dismiss of the item, by arm.", ["arm"]
)
POSTERIOR_UPDATES = Counter("aether_bandit_posterior_updates", "Posterior updates applied.")
DRIFT_DETECTIONS = Counter(
    "aether_drift_detections",
    "Drift detections (each also an event on <ns>.drift).",
    ["signal", "segment", "detector"],
)
DRIFT_STATISTIC = Gauge(
    "aether_drift_statistic",
    "The monitored statistic's current estimate (mean over this worker's partition monitors).",
    ["signal", "segment"],
)
ATTRIBUTION_IDLE_INPUTS = Gauge(
    "aether_attribution_idle_inputs",
    "Owned attribution inputs (one topic of one partition) idle past the idleness timeout at the "
    "last batch: they no longer hold attribution back (docs/architecture.md, Idle inputs).",
    ["input"],
)
ATTRIBUTION_STATES = Counter(
    "aether_attribution_states",
    "Attribution states a batch worked on: kept from the worker's last commit, or rebuilt from "
    "the stored snapshot (docs/architecture.md, States kept between batches).",
    ["source"],
)
for _source in ("kept", "rebuilt"):  # both series from the start: a scrape shows both
    ATTRIBUTION_STATES.labels(_source)
CONTENT_ROWS = Counter(
    "aether_stream_content_rows",
    "Catalogue updates embedded for the content collection: written, unchanged (an older or "
    "equal row was there), failed (Milvus unavailable).",
    ["outcome"],
)
GC_PAUSES = Histogram(
    "aether_gc_pause_seconds",
    "Garbage-collector passes by generation; each one stalls the worker's event loop.",
    ["generation"],
    buckets=(0.001, 0.005, 0.01, 0.03, 0.1, 0.3, 1.0),
)

_gc_started: dict[str, float] = {}


def _time_gc_pass(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _gc_started["at"] = time.perf_counter()
    elif "at" in _gc_started:
        GC_PAUSES.labels(str(info["generation"])).observe(
            time.perf_counter() - _gc_started.pop("at")
        )


def observe_gc_pauses() -> None:
    """Time every collector pass into ``GC_PAUSES`` (idempotent)."""
    if _time_gc_pass not in gc.callbacks:
        gc.callbacks.append(_time_gc_pass)


@contextmanager
def stage_cpu(stage: str) -> Iterator[None]:
    """Add the CPU time this thread spends in the block to ``STAGE_CPU{stage}``. For synchronous
    code only: across an ``await`` the thread would run other tasks."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}: one of {STAGES}")
    started = time.thread_time()
    try:
        yield
    finally:
        STAGE_CPU.labels(stage).inc(time.thread_time() - started)


def observe_many(histogram: Histogram, amounts: Iterable[float]) -> None:
    """``histogram.observe(a)`` for each amount, with one increment per bucket and one of the sum.

    A worker batch observes the freshness of up to thousands of records; ``observe`` takes the
    value's lock twice per record. This counts the batch first (a value goes to the first bucket
    whose upper bound is at least it, as ``observe`` does) and then increments each bucket once,
    through ``prometheus_client``'s own (private) bucket values; a property test holds the
    buckets and the count equal to per-value ``observe`` (``tests/unit/streams/
    test_observe_many.py``).
    """
    bounds = histogram._upper_bounds  # type: ignore[attr-defined]
    counts: dict[int, int] = {}
    total = 0.0
    for amount in amounts:
        i = bisect_left(bounds, amount)
        counts[i] = counts.get(i, 0) + 1
        total += amount
    if not counts:
        return
    histogram._sum.inc(total)  # type: ignore[attr-defined]
    buckets = histogram._buckets  # type: ignore[attr-defined]
    for i, n in counts.items():
        buckets[i].inc(n)
