"""Drift monitoring, pure: river detectors over event-time windows of outcome, input, exposure,
prediction and pipeline signals. No I/O client is imported here; the worker feeds it and persists
its state (``streams``), benchmarks replay streams through it (``benchmarks.drift``).

    from monitoring import Batch, MonitorConfig, new_state, step, to_bytes, from_bytes

    config = MonitorConfig()
    state = new_state(config)                      # or from_bytes(stored, config)
    state, detections, late, duplicates = step(state, Batch(events=..., slates=...), watermark_ms, config)
    stored = to_bytes(state)                       # the whole state, canonical
    saved = save(state)                            # or what changed since the last save
                                                   # (the worker's commit; ``load`` reads it)

Modules: ``observations`` (inputs and converters from ``events`` models), ``monitor`` (the step
and its event-time argument), ``detectors`` (river's ADWIN / Page-Hinkley, latched and
serialisable), ``exposure`` (popularity deciles, JS distance, Gini, coverage), ``config`` (signals
and calibrated thresholds), ``state_codec`` (bytes).
"""

from monitoring.config import ALL, DEFAULT_DETECTORS, MonitorConfig, Signal
from monitoring.detectors import Detector, DetectorKind, DetectorSpec
from monitoring.monitor import MonitorState, Step, admits, estimates, new_state, step
from monitoring.observations import (
    Batch,
    EventSeen,
    PipelineSample,
    ServedItem,
    SlateServed,
    SlotOutcome,
    event_from_interaction,
    outcomes_from_impression,
    slate_from_impression,
)
from monitoring.state_codec import Saved, from_bytes, load, save, to_bytes

__all__ = [
    "ALL",
    "DEFAULT_DETECTORS",
    "Batch",
    "Detector",
    "DetectorKind",
    "DetectorSpec",
    "EventSeen",
    "MonitorConfig",
    "MonitorState",
    "PipelineSample",
    "Saved",
    "ServedItem",
    "Signal",
    "SlateServed",
    "SlotOutcome",
    "Step",
    "admits",
    "estimates",
    "event_from_interaction",
    "from_bytes",
    "load",
    "new_state",
    "outcomes_from_impression",
    "save",
    "slate_from_impression",
    "step",
    "to_bytes",
]
