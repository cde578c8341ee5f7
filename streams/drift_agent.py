"""The drift monitors' runtime: pipeline samples, detections to ``<ns>.drift``, one commit.

``streams.app`` calls ``on_user_records`` at the end of the ``interactions`` agent's batch and
``on_outcome_records`` in the ``bandit_posteriors`` agent (``streams.drift_steps`` says what each
monitor watches). Order, as everywhere in the worker: detections are produced and flushed, then
the monitors' states and consumed offsets are committed. A crash in between re-delivers the batch
and produces the same detections again (same ``detection_id``: consumers de-duplicate on it,
``events.models.DriftDetection``); a crash before the flush loses nothing.

Pipeline samples (lag, freshness, dead-letter rate) are readings of this process, taken for a
partition when a batch of it arrives and at most once per ``sample_every_s`` (the Page-Hinkley
thresholds of those signals were calibrated at one sample a second, docs/benchmarks/drift.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Producer

from events import encode
from monitoring import PipelineSample
from streams import worker_metrics
from streams.drift_steps import DriftEffects, DriftSteps, Estimates
from streams.handlers import Effects, Position, SourceRecord, decoded_by_position
from streams.lag import LagTracker
from streams.publish import flush_or_raise, produce_waiting
from streams.state_port import StateStore
from streams.worker_metrics import stage_cpu


@dataclass(slots=True)
class _Tally:
    """What happened on a partition since its last sample."""

    events: int = 0
    dead_letters: int = 0
    last_sample_s: float = float("-inf")


class DriftRuntime:
    def __init__(
        self,
        steps: DriftSteps,
        *,
        state: StateStore,
        producer: Producer,
        lag: LagTracker,
        now_ms: Callable[[], int],
        wall_clock: Callable[[], float] = time.time,
        sample_every_s: float = 1.0,
    ) -> None:
        self.steps = steps
        self.topics = steps.config.topics
        self.state = state
        self.producer = producer
        self.lag = lag
        self._now_ms = now_ms
        self._wall_clock = wall_clock
        self.sample_every_s = sample_every_s
        self._tallies: dict[int, _Tally] = {}
        self._sequence = 0
        self._estimates: dict[str, Estimates] = {}

    async def on_user_records(
        self,
        records: Sequence[SourceRecord],
        done: Sequence[Effects] = (),
        decoded: Mapping[Position, Any] | None = None,
    ) -> DriftEffects:
        """A batch of the user-keyed topics, after the steps whose ``Effects`` are ``done``: their
        dead letters go into the pipeline samples, their decoded events (``decoded``, when the
        caller has them by position already) into the monitors."""
        dead_letters: dict[int, int] = {}
        for effects in done:
            for letter in effects.dead_letters:
                partition = letter.record.partition
                dead_letters[partition] = dead_letters.get(partition, 0) + 1
        if decoded is None:
            decoded = decoded_by_position(done)
        with stage_cpu("drift"):
            samples = self._samples(records, dead_letters)
            drift = self.steps.user_records(self.state, records, self._now_ms(), samples, decoded)
        await self._publish_and_commit(drift)
        return drift

    async def on_outcome_records(self, records: Sequence[SourceRecord]) -> DriftEffects:
        with stage_cpu("drift"):
            effects = self.steps.outcome_records(self.state, records)
        await self._publish_and_commit(effects)
        return effects

    def _samples(
        self, records: Sequence[SourceRecord], dead_letters: Mapping[int, int]
    ) -> dict[int, PipelineSample]:
        now = self._wall_clock()
        ages: dict[int, list[float]] = {}
        for record in records:
            if record.topic != self.topics.events:
                continue
            tally = self._tallies.setdefault(record.partition, _Tally())
            tally.events += 1
            if record.timestamp_ms is not None:
                ages.setdefault(record.partition, []).append(now - record.timestamp_ms / 1000)
        for partition, count in dead_letters.items():
            self._tallies.setdefault(partition, _Tally()).dead_letters += count
        samples: dict[int, PipelineSample] = {}
        for partition in sorted({r.partition for r in records if r.topic == self.topics.events}):
            tally = self._tallies[partition]
            if now - tally.last_sample_s < self.sample_every_s:
                continue
            self._sequence += 1
            partition_ages = ages.get(partition)
            samples[partition] = PipelineSample(
                at_ms=int(now * 1000),
                sample_id=self._sequence,
                lag_seconds=self.lag.seconds(self.topics.events, partition),
                freshness_seconds=(
                    sum(partition_ages) / len(partition_ages) if partition_ages else None
                ),
                dead_letters=tally.dead_letters,
                events=tally.events,
            )
            self._tallies[partition] = _Tally(last_sample_s=now)
        return samples

    async def _publish_and_commit(self, effects: DriftEffects) -> None:
        for detection in effects.detections:
            produce_waiting(
                self.producer, self.topics.drift, encode(detection), detection.signal.encode()
            )
        if effects.detections:
            await flush_or_raise(self.producer, "drift detections")
        with stage_cpu("state_commit"):
            self.state.commit(effects.commit)
        for detection in effects.detections:
            worker_metrics.DRIFT_DETECTIONS.labels(
                detection.signal, detection.segment, detection.detector
            ).inc()
        if effects.late:
            worker_metrics.EVENTS.labels("drift-monitor", "late").inc(effects.late)
        self._export_estimates(effects.estimates)

    def _export_estimates(self, latest: Mapping[str, Estimates]) -> None:
        """``aether_drift_statistic``: per (signal, segment), the mean over this worker's monitors
        of that kind that have an estimate (user monitors and outcome monitors share no signal)."""
        if not latest:
            return
        self._estimates.update(latest)
        sums: dict[tuple[str, str], list[float]] = {}
        for estimates in self._estimates.values():
            for (signal, segment), value in estimates.items():
                sums.setdefault((signal.value, segment), []).append(value)
        for (name, segment), values in sums.items():
            worker_metrics.DRIFT_STATISTIC.labels(name, segment).set(sum(values) / len(values))
