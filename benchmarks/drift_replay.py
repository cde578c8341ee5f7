"""Replaying a simulated stream through ``monitoring.step`` the way a worker would.

Arrival order: by event time (``ordered``) or by event time plus a uniform delay below the
allowed lateness (``shuffled``: every observation arrives within the lateness of the watermark,
so the monitor must give the same detections and the same state), optionally with a share of
observations delivered twice. Batches of ``batch_size`` observations; the watermark passed with
each batch is the largest event time delivered so far; at the end one empty step with the
watermark far ahead closes every window. Pipeline samples arrive in their own (processing-time)
order.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from benchmarks.drift_world import Stream
from events.models import DriftDetection
from monitoring import Batch, MonitorConfig, MonitorState, new_state, step, to_bytes

KIND_EVENT, KIND_SLATE, KIND_OUTCOME, KIND_SAMPLE = 0, 1, 2, 3


@dataclass
class Replay:
    detections: list[DriftDetection]
    state: MonitorState
    state_bytes: bytes
    step_seconds: float = 0.0  # inside monitoring.step, all batches
    late: int = 0
    duplicates: int = 0
    trace: list[tuple[int, dict[tuple[str, str], float]]] = field(default_factory=list)
    mid_state_bytes: int = 0  # size of to_bytes(state) halfway through, open windows included


def replay(
    stream: Stream,
    config: MonitorConfig,
    *,
    shuffle_seed: int | None = None,
    duplicate_share: float = 0.0,
    batch_size: int = 1_000,
    trace: Callable[[MonitorState], dict[tuple[str, str], float]] | None = None,
) -> Replay:
    """Feed ``stream`` to a fresh monitor; ``trace`` records chosen estimates after each batch."""
    per_kind = (stream.events, stream.slates, stream.outcomes)
    times = [np.fromiter((o[0] for o in objs), np.int64, len(objs)) for objs in per_kind]
    kinds = np.concatenate([np.full(len(t), k, np.int8) for k, t in enumerate(times)])
    index = np.concatenate([np.arange(len(t)) for t in times])
    event_ms = np.concatenate(times)
    arrival = event_ms.astype(np.float64)
    if shuffle_seed is not None:
        rng = np.random.default_rng(shuffle_seed)
        arrival += rng.uniform(0, config.allowed_lateness_ms, len(arrival))
        again = np.flatnonzero(rng.random(len(arrival)) < duplicate_share)
        if again.size:  # a second delivery of each, also within the lateness
            copies = event_ms[again] + rng.uniform(0, config.allowed_lateness_ms, again.size)
            kinds, index, event_ms = (
                np.concatenate([a, a[again]]) for a in (kinds, index, event_ms)
            )
            arrival = np.concatenate([arrival, copies])
    sample_ms = stream.lag_samples_ms[: len(stream.samples)]
    kinds = np.concatenate([kinds, np.full(len(sample_ms), KIND_SAMPLE, np.int8)])
    index = np.concatenate([index, np.arange(len(sample_ms))])
    event_ms = np.concatenate([event_ms, np.full(len(sample_ms), np.iinfo(np.int64).min)])
    arrival = np.concatenate([arrival, sample_ms.astype(np.float64)])
    order = np.argsort(arrival, kind="stable")
    kinds, index = kinds[order].tolist(), index[order].tolist()
    watermarks = np.maximum.accumulate(event_ms[order])

    state = new_state(config)
    result = Replay(detections=[], state=state, state_bytes=b"")
    sources = (*per_kind, stream.samples)
    middle = (len(kinds) // batch_size // 2) * batch_size
    for lo in range(0, len(kinds), batch_size):
        hi = min(lo + batch_size, len(kinds))
        parts: tuple[list, list, list, list] = ([], [], [], [])
        for k, i in zip(kinds[lo:hi], index[lo:hi], strict=True):
            parts[k].append(sources[k][i])
        watermark = int(watermarks[hi - 1])
        started = time.perf_counter_ns()
        state, found, late, dups = step(
            state,
            Batch(parts[0], parts[1], parts[2], parts[3]),
            watermark if watermark > np.iinfo(np.int64).min else None,
            config,
        )
        result.step_seconds += (time.perf_counter_ns() - started) / 1e9
        result.detections.extend(found)
        result.late += late
        result.duplicates += dups
        if lo == middle:
            result.mid_state_bytes = len(to_bytes(state))
        if trace is not None and state.next_window is not None:
            # x = how far the detectors have been fed: the end of the last closed window.
            result.trace.append((state.next_window * config.window_ms, trace(state)))
    end = int(event_ms.max()) + config.allowed_lateness_ms + 2 * config.window_ms
    state, found, _, _ = step(state, Batch(), end, config)
    result.detections.extend(found)
    result.state = state
    result.state_bytes = to_bytes(state)
    return result
