"""The figure of docs/benchmarks/drift.md: signal, detector estimate, injection and detection.

One evaluation seed (0) of three scenarios, replayed exactly as ``aether bench drift`` does,
with the detector's estimate recorded after every batch.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from benchmarks.drift_replay import replay
from benchmarks.drift_world import DRIFTED_ARM, T0_MS, Catalogue, simulate
from monitoring import ALL, MonitorConfig, MonitorState, Signal
from monitoring.exposure import ExposureWindow

PANELS = (
    ("ctr", Signal.CTR, f"arm={DRIFTED_ARM}", "CTR of arm B (slots)"),
    ("score", Signal.TOP_SCORE, ALL, "ranker top score per request"),
    ("exposure", Signal.EXPOSURE_DECILE_JS, ALL, "JS distance of popularity deciles"),
)


def _minutes(ms: np.ndarray | float) -> np.ndarray | float:
    return (np.asarray(ms) - T0_MS) / 60_000


def plot_runs(
    catalogue: Catalogue, config: MonitorConfig, path: Path, requests: int = 20_000, seed: int = 0
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(PANELS), 1, figsize=(10, 9), constrained_layout=True)
    for ax, (scenario, signal, segment, title) in zip(axes, PANELS, strict=True):
        stream = simulate(catalogue, requests, seed, scenario)

        def estimate(state: MonitorState, signal: Signal = signal, segment: str = segment):
            detector = state.detectors.get(signal, {}).get(segment)
            # No detector (before its first input, or while a new reference is learned): a gap.
            value = math.nan if detector is None else detector.estimate
            return {(signal.value, segment): value}

        run = replay(stream, config, trace=estimate)
        times, values = _signal(stream, scenario, config)
        ax.plot(_minutes(times), values, lw=0.8, color="0.6", label="signal")
        traced = [(t, e[(signal.value, segment)]) for t, e in run.trace]
        if traced:
            t, e = zip(*traced, strict=True)
            label = "detector estimate" + (
                " (ADWIN window mean)" if scenario != "exposure" else " (Page-Hinkley mean)"
            )
            ax.plot(_minutes(np.array(t)), e, lw=1.5, color="tab:blue", label=label)
        assert stream.inject_ms is not None
        ax.axvline(_minutes(stream.inject_ms), color="tab:orange", ls="--", label="injection")
        hits = [
            d.event_time_ms
            for d in run.detections
            if d.signal == signal.value
            and d.segment == segment
            and d.event_time_ms >= stream.inject_ms
        ]
        if hits:
            ax.axvline(_minutes(min(hits)), color="tab:red", label="first detection")
        ax.set_title(f"{scenario}: {title}")
        if scenario == "exposure":
            ax.text(
                0.99,
                0.03,
                "after a detection the monitor learns a new reference (gap), so its JS restarts"
                " low;\nthe grey line stays against the first reference",
                transform=ax.transAxes,
                ha="right",
                fontsize=7,
            )
        ax.set_xlabel("event time (minutes, virtual clock)")
        ax.legend(loc="upper left", fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _signal(stream, scenario: str, config: MonitorConfig) -> tuple[np.ndarray, np.ndarray]:
    """The raw signal, smoothed for the eye: rolling means over fixed counts."""
    if scenario == "ctr":
        arm = [(o.event_time_ms, o.clicked) for o in stream.outcomes if o.arm == DRIFTED_ARM]
        t, clicks = (np.array(v) for v in zip(*sorted(arm), strict=True))
        return _rolling(t, clicks.astype(float), 4_000)
    if scenario == "score":
        t = np.array([s.event_time_ms for s in stream.slates])
        return _rolling(t, np.array([s.top_score for s in stream.slates]), 400)
    window = ExposureWindow(
        config.exposure_block_slots,
        config.exposure_hop_slots,
        config.exposure_reference_slots,
        config.exposure_buckets,
        config.max_reference_items,
        config.catalogue_size,
    )
    points = []
    for slate in sorted(stream.slates):
        for item in slate.items:
            stats = window.add(item.item_id)
            if stats is not None:
                points.append((slate.event_time_ms, stats[0]))
    t, js = (np.array(v) for v in zip(*points, strict=True))
    return t, js


def _rolling(t: np.ndarray, x: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    kernel = np.ones(n) / n
    return t[n - 1 :], np.convolve(x, kernel, mode="valid")
