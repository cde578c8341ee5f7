"""Exposure by popularity decile, from the served slates the dashboard reads off ``<ns>.impressions``.

No metric carries the per-decile distribution (a label per decile and per reference would be the
monitor's internals), so the page computes it itself with the monitor's own pure functions
(``monitoring.exposure``): the first ``reference_slots`` slots it reads fix the reference
(items ranked by exposure and cut into buckets of about equal exposure mass), and the last
``window_slots`` slots are "now". The window is fixed in slots, like the monitor's, because Gini
and coverage depend on the window size. The worker's own estimates
(``aether_drift_statistic{signal="exposure_gini"|"catalogue_coverage"|"cold_slot_share"}``)
are shown next to it when it exports them; coldness is only known to the worker.

Thread-safe: the topic reader adds, page requests read.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass

from monitoring.exposure import PopularityReference, gini, js_distance


@dataclass(frozen=True, slots=True)
class ExposureSnapshot:
    reference_slots: int  # slots learned so far (== the target once the reference is fixed)
    reference_target: int
    window_slots: int  # slots in the "now" window
    reference_shares: tuple[float, ...]  # empty while learning
    now_shares: tuple[float, ...]  # empty while learning or before any slot after it
    gini: float | None
    coverage: float | None  # distinct items over the window's slots
    js: float | None

    @property
    def ready(self) -> bool:
        return bool(self.reference_shares) and bool(self.now_shares)


class ExposureTracker:
    def __init__(
        self, reference_slots: int = 2_000, window_slots: int = 2_000, buckets: int = 10
    ) -> None:
        if reference_slots < 1 or window_slots < 1 or buckets < 2:
            raise ValueError("exposure needs reference and window slots and at least 2 buckets")
        self.reference_slots = reference_slots
        self.window_slots = window_slots
        self.buckets = buckets
        self._learning: Counter[str] = Counter()
        self._learned = 0
        self._reference: PopularityReference | None = None
        self._window: deque[str] = deque(maxlen=window_slots)
        self._lock = threading.Lock()

    def add_slate(self, item_ids: Iterable[str]) -> None:
        with self._lock:
            for item_id in item_ids:
                if self._reference is None:
                    self._learning[item_id] += 1
                    self._learned += 1
                    if self._learned >= self.reference_slots:
                        self._reference = PopularityReference.from_counts(
                            self._learning, self.buckets
                        )
                        self._learning = Counter()
                else:
                    self._window.append(item_id)

    def snapshot(self) -> ExposureSnapshot:
        with self._lock:
            reference = self._reference
            window = list(self._window)
            learned = self._learned
        if reference is None or not window:
            return ExposureSnapshot(
                learned, self.reference_slots, len(window),
                reference.shares if reference else (), (), None, None, None,
            )  # fmt: skip
        counts = [0] * self.buckets
        for item_id in window:
            counts[reference.bucket_of.get(item_id, self.buckets - 1)] += 1
        now = tuple(c / len(window) for c in counts)
        items = Counter(window)
        return ExposureSnapshot(
            learned,
            self.reference_slots,
            len(window),
            reference.shares,
            now,
            gini(items.values()),
            len(items) / len(window),
            js_distance(counts, reference.shares),
        )
