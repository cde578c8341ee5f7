"""river's drift detectors behind one small wrapper that latches detections and serialises.

Facts about river 0.26 (docs/benchmarks/drift.md) this wrapper is built around:

* ``drift_detected`` is true for one update only and the detector resets on the next one, so
  :meth:`Detector.update` reports the change on the very update that raised it (the caller
  turns it into a detection event at once; nothing is ever polled).
* Only ADWIN and Page-Hinkley are offered. DDM/EDDM accumulate since their last reset and miss
  changes after a long stable period; HDDM_A/HDDM_W are one-sided (a CTR drop must be fed as
  1 = no click) and bound with the value range, not the variance, so at a 5 % CTR they need
  several times ADWIN's samples; KSWIN is slow and noisy. ADWIN is two-sided and its cut uses the
  window's variance, so one ``delta`` fits every binary or real-valued stream; its ``clock``
  (how often it looks for a cut) is 1 here because a larger clock delays detection.
* Page-Hinkley's ``threshold`` and ``delta`` are in the raw units of the signal: it is used only
  on statistics computed per window (exposure, pipeline), each threshold calibrated on no-drift
  streams (docs/benchmarks/drift.md). ``alpha = 1`` (no forgetting of the cumulative sums).

State: :meth:`Detector.to_dict` holds only JSON types. ADWIN's window lives in river's Rust
helper, whose own state bytes (``__getstate__``) are stored base64-encoded; they are tied to the
river version, which :mod:`monitoring.state_codec` records and checks.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from river.drift import ADWIN, PageHinkley


class DetectorKind(StrEnum):
    ADWIN = "adwin"
    PAGE_HINKLEY = "page_hinkley"


@dataclass(frozen=True, slots=True)
class DetectorSpec:
    """Which river detector and its parameters (constructor arguments, river's names)."""

    kind: DetectorKind = DetectorKind.ADWIN
    delta: float = 0.002  # ADWIN: significance; Page-Hinkley: tolerated drift, raw units
    clock: int = 1  # ADWIN
    grace_period: int = 10  # ADWIN
    min_window_length: int = 5  # ADWIN
    threshold: float = math.inf  # Page-Hinkley, raw units (inf: never fires; calibration runs)
    min_instances: int = 10  # Page-Hinkley
    mode: str = "both"  # Page-Hinkley: "up", "down" or "both"

    def build(self) -> ADWIN | PageHinkley:
        if self.kind is DetectorKind.ADWIN:
            return ADWIN(
                delta=self.delta,
                clock=self.clock,
                grace_period=self.grace_period,
                min_window_length=self.min_window_length,
            )
        return PageHinkley(
            min_instances=self.min_instances,
            delta=self.delta,
            threshold=self.threshold,
            alpha=1.0,
            mode=self.mode,
        )

    @property
    def label(self) -> str:
        """Short and bounded: the ``detector`` label of metrics and detection events."""
        if self.kind is DetectorKind.ADWIN:
            return f"ADWIN(delta={self.delta:g},clock={self.clock})"
        return f"PageHinkley(delta={self.delta:g},threshold={self.threshold:g},mode={self.mode})"


class Change:
    """What one update that raised an alarm reports: the estimate after and before."""

    __slots__ = ("reference", "statistic")

    def __init__(self, statistic: float, reference: float) -> None:
        self.statistic = statistic
        self.reference = reference


class Detector:
    """One river detector for one (signal, segment), plus counters kept across its resets.

    ``updates`` and ``detections`` count since creation; ``peak`` is Page-Hinkley's largest test
    statistic since creation (what the calibration reads from runs with ``threshold = inf``).
    ADWIN: ``_width``/``_total`` mirror what the window held before an update, so the mean of
    the part a cut dropped (the reference) is known exactly.
    """

    __slots__ = ("_adwin", "_total", "_width", "detections", "peak", "river", "spec", "updates")

    def __init__(self, spec: DetectorSpec) -> None:
        self.spec = spec
        self.river: Any = spec.build()
        self._adwin = spec.kind is DetectorKind.ADWIN
        self.updates = 0
        self.detections = 0
        self.peak = 0.0
        self._width = 0.0
        self._total = 0.0

    def update(self, x: float) -> Change | None:
        """Feed one value; a :class:`Change` when this very update detected a drift."""
        self.updates += 1
        river = self.river
        if self._adwin:
            # river's ADWIN.update, inlined (it is the hot path): reset after a detection, then
            # the Rust window's update, which returns whether it cut.
            if river._drift_detected:
                river._reset()
                self._width = self._total = 0.0
            fired = river._drift_detected = river._helper.update(x)
            self._width += 1.0
            self._total += x
            if not fired:
                return None
            width, total = river.width, river.total
            dropped = self._width - width
            reference = (self._total - total) / dropped if dropped > 0 else river.estimation
            self._width, self._total = width, total
            self.detections += 1
            return Change(river.estimation, reference)
        before = river._x_mean.get() if not river._drift_detected else x
        river.update(x)
        if river._x_mean.n >= river.min_instances:
            up = river._sum_increase - river._min_increase
            down = river._max_decrease - river._sum_decrease
            self.peak = max(
                self.peak,
                up if river.mode != "down" else 0.0,
                down if river.mode != "up" else 0.0,
            )
        if not river._drift_detected:
            return None
        self.detections += 1
        return Change(x, before)

    @property
    def estimate(self) -> float:
        """The detector's current estimate of the signal (ADWIN window mean, Page-Hinkley mean)."""
        river = self.river
        if self._adwin:
            return float(river.estimation)
        return float(river._x_mean.get())

    def to_dict(self) -> dict[str, Any]:
        river = self.river
        data: dict[str, Any] = {
            "spec": self.spec.label,
            "updates": self.updates,
            "detections": self.detections,
            "peak": self.peak,
            "fired": bool(river._drift_detected),
        }
        if self._adwin:
            data["window"] = base64.b64encode(river._helper.__getstate__()).decode("ascii")
            data["width"] = self._width
            data["total"] = self._total
        else:
            data["mean"] = [river._x_mean.n, river._x_mean._mean]
            data["sums"] = [
                river._sum_increase,
                river._sum_decrease,
                river._min_increase,
                river._max_decrease,
            ]
        return data

    @classmethod
    def from_dict(cls, spec: DetectorSpec, data: dict[str, Any]) -> Detector:
        """Rebuild; a detector whose stored parameters differ from ``spec`` restarts empty."""
        detector = cls(spec)
        if data.get("spec") != spec.label:
            return detector
        detector.updates = int(data["updates"])
        detector.detections = int(data["detections"])
        detector.peak = float(data["peak"])
        river = detector.river
        river._drift_detected = bool(data["fired"])
        if detector._adwin:
            river._helper.__setstate__(base64.b64decode(data["window"]))
            detector._width = float(data["width"])
            detector._total = float(data["total"])
        else:
            river._x_mean.n, river._x_mean._mean = (float(v) for v in data["mean"])
            (
                river._sum_increase,
                river._sum_decrease,
                river._min_increase,
                river._max_decrease,
            ) = (float(v) for v in data["sums"])
        return detector
