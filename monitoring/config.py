"""The monitored signals and the monitor's parameters, with the calibrated detector defaults.

Every threshold below was calibrated on no-drift streams (calibration seeds, never the
evaluation seeds) by ``aether bench drift --calibrate``; docs/benchmarks/drift.md records the
command, the null statistics and the margins. Re-run it when a signal's definition changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from core.errors import ConfigError
from monitoring.detectors import DetectorKind, DetectorSpec


class Signal(StrEnum):
    # outcome: attributed slots (SlotOutcome)
    CTR = "ctr"  # click bit, per arm and per source
    DISMISS_RATE = "dismiss_rate"  # dismiss bit, per arm
    # input: applied interactions (EventSeen)
    EVENT_SHARE = "event_share"  # 1 if the event has this type, per event type
    EVENT_RATE = "event_rate"  # events of this type per event-time window (count)
    COLD_USER_SHARE = "cold_user_share"  # per window: share of its events from cold users
    COLD_ITEM_SHARE = "cold_item_share"  # per window: share of its events on cold items
    # exposure: served slots (SlateServed), over a sliding window of a fixed number of slots
    EXPOSURE_DECILE_JS = "exposure_decile_js"
    EXPOSURE_GINI = "exposure_gini"
    CATALOGUE_COVERAGE = "catalogue_coverage"
    COLD_SLOT_SHARE = "cold_slot_share"
    # prediction
    TOP_SCORE = "top_score"  # the ranker's top score per request
    SOURCE_SHARE = "source_share"  # 1 if the slot's candidate source is this one, per source
    # pipeline: PipelineSample, processing time
    CONSUMER_LAG = "consumer_lag_seconds"
    FRESHNESS = "freshness_seconds"
    DEAD_LETTER_RATE = "dead_letter_rate"


ALL = "all"  # the segment of unsegmented signals


def _adwin(delta: float) -> DetectorSpec:
    return DetectorSpec(DetectorKind.ADWIN, delta=delta, clock=1)


def _page_hinkley(delta: float, threshold: float, min_instances: int, mode: str) -> DetectorSpec:
    return DetectorSpec(
        DetectorKind.PAGE_HINKLEY,
        delta=delta,
        threshold=threshold,
        min_instances=min_instances,
        mode=mode,
    )


# ADWIN for every per-observation stream (binary shares and CTR, scores, per-window counts and
# shares); Page-Hinkley (raw units) for the statistics computed per exposure window and per
# pipeline sample. Values: the proposal of ``aether bench drift --calibrate`` (see module doc).
# The Page-Hinkley ones are in the units of the simulated ML-1M world (3,706 items, 2,000-slot
# windows, a worker sampled every second): recalibrate them for another catalogue or traffic.
DEFAULT_DETECTORS: Mapping[Signal, DetectorSpec] = MappingProxyType(
    {
        Signal.CTR: _adwin(0.001),
        Signal.DISMISS_RATE: _adwin(0.003),
        Signal.EVENT_SHARE: _adwin(0.003),
        Signal.EVENT_RATE: _adwin(0.003),
        Signal.COLD_USER_SHARE: _adwin(0.003),
        Signal.COLD_ITEM_SHARE: _adwin(0.003),
        Signal.COLD_SLOT_SHARE: _adwin(0.0003),
        Signal.TOP_SCORE: _adwin(3e-05),
        Signal.SOURCE_SHARE: _adwin(0.001),
        Signal.EXPOSURE_DECILE_JS: _page_hinkley(0.0284, 0.0189, 8, "up"),
        Signal.EXPOSURE_GINI: _page_hinkley(0.0106, 0.00707, 8, "both"),
        Signal.CATALOGUE_COVERAGE: _page_hinkley(0.0137, 0.00913, 8, "both"),
        Signal.CONSUMER_LAG: _page_hinkley(0.528, 0.352, 30, "up"),
        Signal.FRESHNESS: _page_hinkley(0.532, 0.355, 30, "up"),
        Signal.DEAD_LETTER_RATE: _page_hinkley(0.0135, 0.0631, 30, "up"),
    }
)


@dataclass(frozen=True, slots=True)
class MonitorConfig:
    """Parameters of one monitor instance (one per stream consumer; see ``monitoring.monitor``).

    ``window_ms``: event-time tumbling windows; a window is fed to the detectors once the
    watermark minus ``allowed_lateness_ms`` has passed its end (its contents are final then).
    ``max_gap_windows``: after this many consecutive empty windows the rest of a silence is
    skipped (the event-rate detectors have seen the silence by then). Kept short: each empty
    window fed is one update per event type, so a replay of sparse historic data (MovieLens:
    hours between a partition's events) paid up to this many updates per *event*; at 360 the
    worker spent milliseconds per event on it (docs/benchmarks/drift.md, "Cost in the worker").
    ``max_segments``: per signal (arms, sources, event types are bounded; anything past this
    many distinct values is ignored, never a new detector).
    """

    window_ms: int = 10_000
    allowed_lateness_ms: int = 60_000
    max_gap_windows: int = 6
    max_segments: int = 32
    exposure_block_slots: int = 2_000
    exposure_hop_slots: int = 500
    exposure_reference_slots: int = 20_000
    exposure_buckets: int = 10
    max_reference_items: int = 10_000
    catalogue_size: int | None = None
    detectors: Mapping[Signal, DetectorSpec] = field(default_factory=lambda: DEFAULT_DETECTORS)

    def __post_init__(self) -> None:
        if self.window_ms <= 0 or self.allowed_lateness_ms < 0:
            raise ConfigError("window_ms must be > 0 and allowed_lateness_ms >= 0")
        if self.exposure_hop_slots <= 0 or self.exposure_block_slots % self.exposure_hop_slots:
            raise ConfigError("exposure_block_slots must be a positive multiple of the hop")
        if self.exposure_reference_slots <= 0 or self.exposure_buckets < 2:
            raise ConfigError("exposure reference needs slots > 0 and at least 2 buckets")
        missing = [s.value for s in Signal if s not in self.detectors]
        if missing:
            raise ConfigError(f"no detector configured for {', '.join(missing)}")

    def spec(self, signal: Signal) -> DetectorSpec:
        return self.detectors[signal]
