"""Calibration of every detector threshold on no-drift streams (``aether bench drift --calibrate``).

Runs only on *calibration seeds* (1000, 1001, …), never on the evaluation seeds (0, 1, …).

* ADWIN (per-observation signals): ``delta`` is walked down a grid of about 3× steps; for each
  signal the first value with **no** detection on any calibration stream is found, and the next,
  stricter, grid value is proposed (one step of margin: the evaluation replays more no-drift
  data than the calibration does).
* Page-Hinkley (per-window statistics, raw units): ``delta`` is 3 × the statistic's no-drift
  standard deviation σ (only excursions beyond 3σ accumulate; the hopping exposure windows
  overlap, so smaller tolerances let correlated noise pile up), and ``threshold`` is the larger
  of 1.5 × the largest test statistic reached on any calibration stream with the threshold at
  infinity, and 2σ.

Prints and returns the proposal; ``monitoring/config.py`` holds the values in use and
docs/benchmarks/drift.md the run that produced them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping

import numpy as np

from benchmarks.drift_replay import replay
from benchmarks.drift_world import Catalogue, Stream, simulate
from monitoring import DetectorKind, MonitorConfig, Signal
from monitoring.exposure import ExposureWindow

ADWIN_GRID = (1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6)
PH_TOLERANCE_SIGMAS = 3.0
PH_MARGIN = 1.5
PH_FLOOR_SIGMAS = 2.0


def null_series(stream: Stream, config: MonitorConfig) -> dict[Signal, np.ndarray]:
    """The no-drift values of the Page-Hinkley signals, computed as the monitor computes them."""
    exposure = ExposureWindow(
        config.exposure_block_slots,
        config.exposure_hop_slots,
        config.exposure_reference_slots,
        config.exposure_buckets,
        config.max_reference_items,
        config.catalogue_size,
    )
    js, gini, coverage = [], [], []
    for slate in sorted(stream.slates):
        for item in slate.items:
            stats = exposure.add(item.item_id)
            if stats is not None:
                js.append(stats[0])
                gini.append(stats[1])
                coverage.append(stats[2])
    samples = stream.samples
    return {
        Signal.EXPOSURE_DECILE_JS: np.array(js),
        Signal.EXPOSURE_GINI: np.array(gini),
        Signal.CATALOGUE_COVERAGE: np.array(coverage),
        Signal.CONSUMER_LAG: np.array([s.lag_seconds for s in samples]),
        Signal.FRESHNESS: np.array([s.freshness_seconds for s in samples]),
        Signal.DEAD_LETTER_RATE: np.array([s.dead_letters / s.events for s in samples if s.events]),
    }


def calibrate(
    catalogue: Catalogue,
    base: MonitorConfig,
    seeds: list[int],
    requests: int,
    progress: Callable[[str], None] = print,
) -> dict[str, object]:
    streams = [simulate(catalogue, requests, seed, None) for seed in seeds]
    specs = dict(base.detectors)
    ph = [s for s, spec in specs.items() if spec.kind is DetectorKind.PAGE_HINKLEY]
    adwin = [s for s, spec in specs.items() if spec.kind is DetectorKind.ADWIN]
    figures: dict[str, object] = {}

    # Page-Hinkley: delta from the null spread, then the peak statistic at threshold = inf.
    series: dict[Signal, list[np.ndarray]] = {s: [] for s in ph}
    for stream in streams:
        for signal, values in null_series(stream, base).items():
            series[signal].append(values)
    for signal in ph:
        values = np.concatenate(series[signal])
        std = float(values.std()) or 1e-6
        specs[signal] = dataclasses.replace(
            specs[signal], delta=PH_TOLERANCE_SIGMAS * std, threshold=math.inf
        )
        figures[f"{signal.value}_null_mean"] = float(values.mean())
        figures[f"{signal.value}_null_std"] = std
    peaks: dict[Signal, float] = dict.fromkeys(ph, 0.0)
    first_clean: dict[Signal, float] = {}
    for delta in ADWIN_GRID:
        trial = {**specs, **{s: dataclasses.replace(specs[s], delta=delta) for s in adwin}}
        config = dataclasses.replace(base, detectors=trial)
        alarms = dict.fromkeys(adwin, 0)
        for stream in streams:
            run = replay(stream, config)
            for detection in run.detections:
                signal = Signal(detection.signal)
                if signal in alarms:
                    alarms[signal] += 1
            if delta == ADWIN_GRID[0]:
                for signal in ph:
                    for detector in run.state.detectors.get(signal, {}).values():
                        peaks[signal] = max(peaks[signal], detector.peak)
        for signal, count in alarms.items():
            figures[f"{signal.value}_null_alarms_at_delta_{delta:g}"] = count
            if count == 0 and signal not in first_clean:
                first_clean[signal] = delta
        progress(f"ADWIN delta {delta:g}: null alarms {sum(alarms.values())} {alarms}")
        if all(s in first_clean for s in adwin):
            break
    proposal: dict[Signal, object] = {}
    for signal in adwin:
        clean = first_clean.get(signal, ADWIN_GRID[-1])
        stricter = ADWIN_GRID[min(ADWIN_GRID.index(clean) + 1, len(ADWIN_GRID) - 1)]
        figures[f"{signal.value}_first_clean_delta"] = clean
        proposal[signal] = dataclasses.replace(specs[signal], delta=stricter)
    for signal in ph:
        figures[f"{signal.value}_null_peak"] = peaks[signal]
        std = float(figures[f"{signal.value}_null_std"])  # type: ignore[arg-type]
        threshold = max(PH_MARGIN * peaks[signal], PH_FLOOR_SIGMAS * std)
        proposal[signal] = dataclasses.replace(
            specs[signal], threshold=_round(threshold), delta=_round(specs[signal].delta)
        )
    figures["proposal"] = {s.value: _spec_text(spec) for s, spec in proposal.items()}
    return figures


def _round(x: float) -> float:
    return float(f"{x:.3g}")


def _spec_text(spec: object) -> str:
    fields: Mapping[str, object] = dataclasses.asdict(spec)  # type: ignore[call-overload]
    return ", ".join(f"{k}={v}" for k, v in fields.items())
