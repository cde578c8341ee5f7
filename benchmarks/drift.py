"""Drift detection benchmark: ML-1M replayed through the pure monitor on a virtual clock.

    aether bench drift --dataset ml-1m --data ../shared/datasets/ml-1m --json artifacts/drift.json

Not through the real worker: the simulated streams (``benchmarks.drift_world``) go through the
same pure step the worker calls (``monitoring.step``), batch by batch, with the watermark a
worker would pass (``benchmarks.drift_replay``), on a virtual event-time clock. Per seed: one
null stream (no drift) replayed twice — in event-time order, and shuffled within the allowed
lateness with 1 % of observations delivered twice, which must give identical detections and
identical state bytes — and one stream per scenario with a drift injected at 60 % of the run.

Flat keys: ``drift_<scenario>_detected_share`` (0..1 over seeds, a detection on the scenario's
signal at or after the injection), ``drift_<scenario>_delay_events_p50``/``_p90`` (in the
scenario's unit, below), ``drift_<scenario>_false_alarms_before_injection``,
``null_false_alarms``, ``null_events`` / ``null_impressions`` / ``null_requests``,
``null_shuffled_identical_share``, ``monitor_update_us_p99`` (one detector update, timed one by
one) and ``monitor_us_per_observation`` (whole steps, all signals).

``--calibrate`` runs the threshold calibration instead (``benchmarks.drift_calibration``).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.drift_replay import Replay, replay
from benchmarks.drift_world import DRIFTED_ARM, SCENARIOS, Catalogue, Stream, simulate
from benchmarks.machine import machine_description
from benchmarks.output import print_figures, write_json
from events.models import DriftDetection
from monitoring import Detector, MonitorConfig, Signal

CALIBRATION_SEED0 = 1000


@dataclass(frozen=True)
class Target:
    """Which detections count for a scenario and in what unit its delay is counted."""

    signals: tuple[tuple[Signal, str | None], ...]  # (signal, segment or None for any)
    unit: str  # "arm_slots" | "events" | "requests" | "slots"


TARGETS: dict[str, Target] = {
    "ctr": Target(((Signal.CTR, f"arm={DRIFTED_ARM}"),), "arm_slots"),
    "dismiss": Target(
        (
            (Signal.EVENT_SHARE, "event_type=dismiss"),
            (Signal.EVENT_RATE, "event_type=dismiss"),
            (Signal.DISMISS_RATE, None),
        ),
        "events",
    ),
    "exposure": Target(
        (
            (Signal.EXPOSURE_DECILE_JS, None),
            (Signal.EXPOSURE_GINI, None),
            (Signal.CATALOGUE_COVERAGE, None),
        ),
        "slots",
    ),
    "score": Target(((Signal.TOP_SCORE, None),), "requests"),
    "source_mix": Target(((Signal.SOURCE_SHARE, "source=ann"),), "slots"),
    "lag": Target(((Signal.CONSUMER_LAG, None), (Signal.FRESHNESS, None)), "events"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="ml-1m", choices=("ml-latest-small", "ml-1m"))
    parser.add_argument("--data", help="dataset folder (default ../shared/datasets/ml-1m)")
    parser.add_argument("--json", help="write the figures here as one flat JSON object")
    parser.add_argument("--seeds", type=int, default=10, help="seeds per scenario (0, 1, …)")
    parser.add_argument(
        "--scenarios",
        default=",".join(("null", *SCENARIOS)),
        help=f"comma-separated subset of null,{','.join(SCENARIOS)}",
    )
    parser.add_argument(
        "--requests", type=int, default=20_000, help="requests per run (10 slots each)"
    )
    parser.add_argument(
        "--timing-updates", type=int, default=200_000, help="detector updates timed one by one"
    )
    parser.add_argument("--calibrate", action="store_true", help="calibrate thresholds instead")
    parser.add_argument("--calibration-seeds", type=int, default=10)
    parser.add_argument("--plot", help="save a PNG of one ctr and one exposure run here")


def command(args: argparse.Namespace) -> int:
    from interactions.movielens import load_movielens

    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = sorted(set(scenarios) - {"null", *SCENARIOS})
    if unknown:
        raise SystemExit(f"unknown scenarios: {', '.join(unknown)}")
    catalogue = Catalogue.from_ratings(load_movielens(args.dataset, args.data).ratings)
    config = MonitorConfig(catalogue_size=len(catalogue.item_ids))
    if args.calibrate:
        from benchmarks.drift_calibration import calibrate

        seeds = list(range(CALIBRATION_SEED0, CALIBRATION_SEED0 + args.calibration_seeds))
        figures = calibrate(catalogue, config, seeds, args.requests)
    else:
        figures = measure(
            catalogue, config, scenarios, args.seeds, args.requests, args.plot, args.timing_updates
        )
    figures["machine"] = machine_description()
    print_figures(figures)
    write_json(args.json, figures)
    return 0


def measure(
    catalogue: Catalogue,
    config: MonitorConfig,
    scenarios: list[str],
    seeds: int,
    requests: int,
    plot: str | None = None,
    timing_updates: int = 200_000,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    figures: dict[str, Any] = {"requests_per_run": requests, "seeds": seeds}
    observations = 0
    step_seconds = 0.0
    state_sizes: list[int] = []

    def run(stream: Stream, **kwargs: Any) -> Replay:
        nonlocal observations, step_seconds
        result = replay(stream, config, **kwargs)
        step_seconds += result.step_seconds
        observations += len(stream.events) + len(stream.slates) + len(stream.outcomes)
        state_sizes.append(result.mid_state_bytes)
        return result

    if "null" in scenarios:
        alarms = identical = 0
        totals = np.zeros(3, dtype=np.int64)
        for seed in range(seeds):
            stream = simulate(catalogue, requests, seed, None)
            ordered = run(stream)
            shuffled = run(stream, shuffle_seed=seed + 10_000, duplicate_share=0.01)
            same = [d.detection_id for d in ordered.detections] == [
                d.detection_id for d in shuffled.detections
            ] and ordered.state_bytes == shuffled.state_bytes
            identical += same
            alarms += len(ordered.detections) + len(shuffled.detections)
            totals += 2 * np.array([len(stream.events), len(stream.outcomes), len(stream.slates)])
            progress(f"null seed {seed}: {len(ordered.detections)} alarms, identical={same}")
        figures["null_false_alarms"] = alarms
        figures["null_events"], figures["null_impressions"], figures["null_requests"] = (
            int(v) for v in totals
        )
        figures["null_shuffled_identical_share"] = identical / seeds
    for scenario in (s for s in scenarios if s != "null"):
        delays: list[int] = []
        early = 0
        for seed in range(seeds):
            stream = simulate(catalogue, requests, seed, scenario)
            result = run(stream)
            delay, before = evaluate(stream, result, TARGETS[scenario])
            early += len(before)
            if delay is not None:
                delays.append(delay)
            alarms = ", ".join(f"{d.signal}/{d.segment}" for d in before) or "none"
            progress(f"{scenario} seed {seed}: delay {delay}, alarms before injection: {alarms}")
        figures[f"drift_{scenario}_detected_share"] = len(delays) / seeds
        if delays:
            figures[f"drift_{scenario}_delay_events_p50"] = float(np.percentile(delays, 50))
            figures[f"drift_{scenario}_delay_events_p90"] = float(np.percentile(delays, 90))
        figures[f"drift_{scenario}_false_alarms_before_injection"] = early
    figures["monitor_us_per_observation"] = step_seconds * 1e6 / max(observations, 1)
    figures["monitor_state_kib_max"] = max(state_sizes, default=0) / 1024
    figures.update(update_latency(config, timing_updates))
    if plot:
        from benchmarks.drift_plot import plot_runs

        plot_runs(catalogue, config, Path(plot))
    return figures


def evaluate(
    stream: Stream, result: Replay, target: Target
) -> tuple[int | None, list[DriftDetection]]:
    """(delay in the target's unit or None if undetected, detections before the injection)."""
    assert stream.inject_ms is not None
    before = [d for d in result.detections if d.event_time_ms < stream.inject_ms]
    hits = [
        d.event_time_ms
        for d in result.detections
        if d.event_time_ms >= stream.inject_ms
        and any(
            d.signal == signal.value and (segment is None or d.segment == segment)
            for signal, segment in target.signals
        )
    ]
    if not hits:
        return None, before
    detected = min(hits)
    times = {
        "arm_slots": stream.slot_ms[stream.slot_arm_b],
        "events": stream.event_ms,
        "requests": stream.request_ms,
        "slots": stream.slot_ms,
    }[target.unit]
    inside = (times >= stream.inject_ms) & (times <= detected)
    return int(inside.sum()), before


def update_latency(config: MonitorConfig, n: int = 200_000, seed: int = 0) -> dict[str, float]:
    """Each configured detector kind, timed update by update on no-drift inputs."""
    rng = np.random.default_rng(seed)
    inputs = {
        Signal.CTR: (rng.random(n) < 0.05).astype(float),
        Signal.TOP_SCORE: rng.standard_normal(n),
        Signal.EXPOSURE_DECILE_JS: 0.08 + 0.01 * rng.standard_normal(n // 10),
        Signal.CONSUMER_LAG: np.abs(rng.normal(0.5, 0.2, n // 10)),
    }
    timings: list[np.ndarray] = []
    figures: dict[str, float] = {}
    clock = time.perf_counter_ns
    for signal, values in inputs.items():
        detector = Detector(config.spec(signal))
        spent = np.empty(len(values), dtype=np.int64)
        for i, x in enumerate(values.tolist()):
            started = clock()
            detector.update(x)
            spent[i] = clock() - started
        us = spent / 1000
        timings.append(us)
        figures[f"monitor_update_us_p99_{signal.value}"] = float(np.percentile(us, 99))
    everything = np.concatenate(timings)
    figures["monitor_update_us_p50"] = float(np.percentile(everything, 50))
    figures["monitor_update_us_p99"] = float(np.percentile(everything, 99))
    return figures
