"""The drift log: the newest detections read from ``<ns>.drift``, de-duplicated, bounded.

A replay of the worker writes the same detections again with the same ``detection_id``
(``events.models.DriftDetection``), so the log keeps one entry per id. Records that do not
validate are counted and skipped: the page shows what it could read, it never fails on a record.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from events.models import DriftDetection


@dataclass(frozen=True, slots=True)
class DriftEntry:
    detection: DriftDetection
    received_at: float  # epoch seconds when the dashboard read it (the x of an alarm marker)

    def to_json(self) -> dict[str, Any]:
        d = self.detection
        return {
            "detection_id": d.detection_id,
            "signal": d.signal,
            "segment": d.segment,
            "detector": d.detector,
            "statistic": d.statistic,
            "reference": d.reference,
            "detected_at": d.event_time.isoformat(),
            "window_start": d.window_start.isoformat(),
            "window_end": d.window_end.isoformat(),
            "received_at": self.received_at,
        }


class DriftLog:
    """Thread-safe: the topic reader adds, page requests read."""

    def __init__(self, capacity: int = 200) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[str, DriftEntry] = OrderedDict()
        self._lock = threading.Lock()
        self.skipped = 0  # records that were not valid detections

    def add_record(self, payload: bytes | str, received_at: float) -> DriftEntry | None:
        """Decode one record of the drift topic; ``None`` (and counted) when it is invalid."""
        try:
            detection = DriftDetection.model_validate_json(payload)
        except (ValidationError, ValueError):
            with self._lock:
                self.skipped += 1
            return None
        return self.add(detection, received_at)

    def add(self, detection: DriftDetection, received_at: float) -> DriftEntry:
        with self._lock:
            known = self._entries.get(detection.detection_id)
            if known is not None:
                return known
            entry = DriftEntry(detection, received_at)
            self._entries[detection.detection_id] = entry
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
            return entry

    def newest_first(self) -> list[DriftEntry]:
        """By detected-at event time, newest first (the order records arrive is not event time)."""
        with self._lock:
            entries = list(self._entries.values())
        return sorted(
            entries,
            key=lambda e: (e.detection.event_time, e.detection.detection_id),
            reverse=True,
        )
