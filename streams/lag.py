"""How far behind its input the worker is: in records and in time, per topic and partition.

``LagTracker.handled(records)`` notes the last record handled of each (topic, partition) — its
offset and broker timestamp; ``highwater`` (the consumer's end offset of a partition, injected so
the tracker has no client) says how many records wait behind it. Time lag is *now minus the broker
timestamp of the last record handled* while records are waiting, 0 when caught up: it grows by
one second per second while a consumer is stalled, and it is what a record arriving now would
wait. The worker's timer exports both as gauges (``streams.worker_metrics``) and the drift
monitor samples the time lag (``streams.drift_steps``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable

from streams.handlers import SourceRecord

Highwater = Callable[[str, int], int | None]  # (topic, partition) -> end offset, None if unknown


class LagTracker:
    def __init__(
        self, highwater: Highwater | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.highwater = highwater
        self._clock = clock
        self._last: dict[tuple[str, int], tuple[int, float | None]] = {}  # offset, broker ts (s)

    def handled(self, records: Iterable[SourceRecord]) -> None:
        for r in records:
            tp = (r.topic, r.partition)
            known = self._last.get(tp)
            if known is None or r.offset > known[0]:
                ts = None if r.timestamp_ms is None else r.timestamp_ms / 1000
                self._last[tp] = (r.offset, ts)

    def waiting(self, topic: str, partition: int) -> int | None:
        """Records after the last one handled (``None``: end offset or position not known)."""
        known = self._last.get((topic, partition))
        if known is None or self.highwater is None:
            return None
        end = None
        with contextlib.suppress(Exception):  # not fetched yet, or the partition moved away
            end = self.highwater(topic, partition)
        return None if end is None else max(0, end - known[0] - 1)

    def seconds(self, topic: str, partition: int) -> float:
        known = self._last.get((topic, partition))
        if known is None or known[1] is None or not self.waiting(topic, partition):
            return 0.0
        return max(0.0, self._clock() - known[1])

    def by_topic(self, owned: Iterable[tuple[str, int]]) -> dict[str, tuple[int, float]]:
        """topic -> (records waiting summed over ``owned`` partitions, the largest time lag)."""
        out: dict[str, tuple[int, float]] = {}
        for topic, partition in owned:
            records, seconds = out.get(topic, (0, 0.0))
            out[topic] = (
                records + (self.waiting(topic, partition) or 0),
                max(seconds, self.seconds(topic, partition)),
            )
        return out
