"""Prometheus metrics of the stream worker (``prometheus_client``, the process-wide registry)."""

from __future__ import annotations

import gc
import time

from prometheus_client import Counter, Histogram

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
