"""The drift monitor as one pure step: ``step(state, batch, watermark_ms, config)``.

    state, detections, late, duplicates = step(state, batch, watermark_ms, config)

Why it is event-time correct (docs/architecture.md)
-------------------------------------------
Observations are buffered into event-time tumbling windows of ``config.window_ms``. Window
``k = [k·W, (k+1)·W)`` is *closed* — fed to the detectors — only once
``watermark − allowed_lateness ≥ (k+1)·W``; windows close strictly in order. From then on it
can receive nothing: an observation whose window is closed is rejected as late (counted, not
applied), and any observation that arrives within the allowed lateness of the watermark
belongs to a window that is still open. Inside a window, observations are de-duplicated by id
(of two copies with different content the one with the smaller ``repr`` is kept, so even a
producer's conflicting copies do not depend on arrival order) and fed in the canonical order ``(event_time, id)``. Therefore:

* the detector inputs — and so every detection and the whole state — are a function of the set
  of admitted observations, not of their arrival order or of how they were cut into batches;
* a duplicate changes nothing; a replay of the same log gives the same detections (with the same
  ``detection_id``); nothing reads the wall clock.

``watermark_ms`` is what the caller's stream has reached: for a monitor fed by several partitions
pass the *lowest* of their watermarks, so no partition's admitted events can find their window
closed. One monitor instance per consumer (the interactions agent for events and slates; the
outcomes consumer, whose lateness must cover the attribution window, for ``SlotOutcome``s).

Pipeline samples (lag, freshness, dead letters) are readings of the process, not of the event
log; they bypass the windows and are applied in ``(at_ms, sample_id)`` order as they come (see
:class:`monitoring.observations.PipelineSample`).

Each detection is an ``events.models.DriftDetection`` (the ``<ns>.drift`` payload); detector
state is river's own and survives ``monitoring.state_codec.to_bytes``/``from_bytes``. The state
is updated in place and returned, bytewax style; keep its bytes if the old state is needed.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple, TypeVar

from events.models import DriftDetection, from_epoch_ms
from monitoring.config import ALL, MonitorConfig, Signal
from monitoring.detectors import Change, Detector
from monitoring.exposure import ExposureWindow
from monitoring.observations import (
    Batch,
    EventSeen,
    PipelineSample,
    SlateServed,
    SlotOutcome,
)

Observation = EventSeen | SlateServed | SlotOutcome
Obs = TypeVar("Obs", EventSeen, SlateServed, SlotOutcome)


@dataclass(slots=True)
class WindowBuffer:
    """The admitted observations of one open window, by de-duplication id."""

    events: dict[str, EventSeen] = field(default_factory=dict)
    slates: dict[str, SlateServed] = field(default_factory=dict)
    outcomes: dict[str, SlotOutcome] = field(default_factory=dict)


@dataclass(slots=True)
class MonitorState:
    """Everything a monitor instance carries between batches (serialised by ``state_codec``).

    ``next_window``: index of the next window to close (``None`` until the first close);
    ``empty_run``: consecutive empty windows closed; ``last_sample``: the last applied pipeline
    sample's ``(at_ms, sample_id)``.
    """

    exposure: ExposureWindow
    watermark_ms: int | None = None
    next_window: int | None = None
    open: dict[int, WindowBuffer] = field(default_factory=dict)
    detectors: dict[Signal, dict[str, Detector]] = field(default_factory=dict)
    empty_run: int = 0
    last_sample: tuple[int, int] | None = None
    # How the state is persisted (``state_codec.save``), not what it means: the observations
    # admitted since the last save, by window; how many chunks each open window has saved; the
    # version of the last save; a cache of its encoding.
    unsaved: dict[int, WindowBuffer] = field(default_factory=dict)
    chunks: dict[int, int] = field(default_factory=dict)
    version: str = ""
    # the last save's JSON of the detectors and the exposure, by (next_window, last_sample)
    learned_json: tuple[tuple[int | None, tuple[int, int] | None], dict[str, str]] | None = field(
        default=None, compare=False, repr=False
    )


class Step(NamedTuple):
    state: MonitorState
    detections: list[DriftDetection]
    late: int  # observations whose window had already closed (not applied)
    duplicates: int  # observations whose id was already buffered (not applied)


def new_state(config: MonitorConfig) -> MonitorState:
    return MonitorState(
        exposure=ExposureWindow(
            block_slots=config.exposure_block_slots,
            hop_slots=config.exposure_hop_slots,
            reference_slots=config.exposure_reference_slots,
            buckets=config.exposure_buckets,
            max_reference_items=config.max_reference_items,
            catalogue_size=config.catalogue_size,
        )
    )


def step(
    state: MonitorState, batch: Batch, watermark_ms: int | None, config: MonitorConfig
) -> Step:
    """Admit ``batch``, advance the watermark, close every window it completes."""
    late = duplicates = 0
    width = config.window_ms
    closed_below = _closed_below(state, config)
    for kind, observations in (
        ("events", batch.events),
        ("slates", batch.slates),
        ("outcomes", batch.outcomes),
    ):
        for obs in observations:
            window = obs[0] // width
            if closed_below is not None and window < closed_below:
                late += 1
                continue
            buffer = state.open.get(window)
            if buffer is None:
                buffer = state.open[window] = WindowBuffer()
            kept = admit(getattr(buffer, kind), obs)
            if kept is not True:
                duplicates += 1
            if kept is not False:
                fresh = state.unsaved.get(window)
                if fresh is None:
                    fresh = state.unsaved[window] = WindowBuffer()
                getattr(fresh, kind)[obs[1]] = obs
    detections: list[DriftDetection] = []
    _apply_samples(state, batch.samples, config, detections)
    if watermark_ms is not None and (
        state.watermark_ms is None or watermark_ms > state.watermark_ms
    ):
        state.watermark_ms = watermark_ms
    if state.watermark_ms is not None:
        _close_windows(
            state, (state.watermark_ms - config.allowed_lateness_ms) // width, config, detections
        )
    return Step(state, detections, late, duplicates)


def admit(held: dict[str, Obs], obs: Obs) -> bool | None:
    """Buffer ``obs`` by its id unless one with that id is held already: True when it was new,
    None when it replaced a held one, False when it changed nothing.

    Same id, other content (a producer bug): the one whose text sorts first is kept — a total
    order, so the buffer does not depend on arrival order and nothing can fail to compare.
    """
    known = held.get(obs[1])
    if known is None:
        held[obs[1]] = obs
        return True
    if known != obs and repr(obs) < repr(known):
        held[obs[1]] = obs
        return None
    return False


def admits(state: MonitorState, event_time_ms: int, config: MonitorConfig) -> bool:
    """Whether :func:`step` would buffer an observation at ``event_time_ms`` now (its window is
    still open), so a caller can keep per-key bookkeeping over exactly the admitted ones."""
    closed_below = _closed_below(state, config)
    return closed_below is None or event_time_ms // config.window_ms >= closed_below


def _closed_below(state: MonitorState, config: MonitorConfig) -> int | None:
    """Windows below this index take nothing more: closed, or ended before watermark − lateness
    (before the first close only the latter; ``None`` while there is no watermark)."""
    horizon = None
    if state.watermark_ms is not None:
        horizon = (state.watermark_ms - config.allowed_lateness_ms) // config.window_ms
    if state.next_window is None or horizon is None:
        return state.next_window if horizon is None else horizon
    return max(state.next_window, horizon)


def estimates(state: MonitorState) -> Iterator[tuple[Signal, str, float]]:
    """Each detector's current estimate (the ``aether_drift_statistic`` gauge)."""
    for signal, group in sorted(state.detectors.items()):
        for segment, detector in sorted(group.items()):
            yield signal, segment, detector.estimate


# -- closing windows ---------------------------------------------------------------------------


def _close_windows(
    state: MonitorState, horizon: int, config: MonitorConfig, out: list[DriftDetection]
) -> None:
    """Close every window ``k < horizon`` (its end is at or before watermark − lateness)."""
    k = state.next_window
    if k is None:
        if not state.open:
            return
        k = min(state.open)
        if k >= horizon:
            return  # nothing closes yet: every window stays open to what is within the lateness
    while k < horizon:
        buffer = state.open.pop(k, None)
        state.unsaved.pop(k, None)
        if buffer is None:
            # Saturating, so the state is the same however a silence was cut into batches.
            state.empty_run = min(state.empty_run + 1, config.max_gap_windows + 1)
            if state.empty_run > config.max_gap_windows:
                # The rest of a long silence is not fed; jump to the next buffered window.
                k = max(k + 1, min(min(state.open, default=horizon), horizon))
                continue
            buffer = WindowBuffer()
        else:
            state.empty_run = 0
        _feed_window(state, k, buffer, config, out)
        k += 1
    state.next_window = k


class _Feed:
    """Per-window helper: finds detectors and turns their changes into detections."""

    __slots__ = ("config", "end", "out", "start", "state")

    def __init__(
        self,
        state: MonitorState,
        start: int,
        end: int,
        config: MonitorConfig,
        out: list[DriftDetection],
    ) -> None:
        self.state, self.start, self.end, self.config, self.out = state, start, end, config, out

    def detector(self, signal: Signal, segment: str) -> Detector | None:
        group = self.state.detectors.get(signal)
        if group is None:
            group = self.state.detectors[signal] = {}
        found = group.get(segment)
        if found is None and len(group) < self.config.max_segments:
            found = group[segment] = Detector(self.config.spec(signal))
        return found

    def group(self, signal: Signal) -> dict[str, Detector]:
        return self.state.detectors.get(signal) or {}

    def update(self, signal: Signal, segment: str, x: float, t: int) -> Change | None:
        detector = self.detector(signal, segment)
        if detector is None:
            return None
        change = detector.update(x)
        if change is not None:
            self.emit(signal, segment, detector, change, t)
        return change

    def emit(
        self, signal: Signal, segment: str, detector: Detector, change: Change, t: int
    ) -> None:
        self.out.append(detection(signal, segment, detector, change, t, self.start, self.end))

    def one_hot(self, signal: Signal, segment: str, t: int) -> None:
        """Feed 1 to ``segment``'s detector and 0 to every other segment of ``signal``."""
        self.detector(signal, segment)
        for name, detector in self.group(signal).items():
            change = detector.update(1.0 if name == segment else 0.0)
            if change is not None:
                self.emit(signal, name, detector, change, t)


def detection(
    signal: Signal,
    segment: str,
    detector: Detector,
    change: Change,
    t: int,
    window_start: int,
    window_end: int,
) -> DriftDetection:
    key = f"{signal.value}|{segment}|{t}|{detector.detections}".encode()
    return DriftDetection(
        detection_id=hashlib.blake2b(key, digest_size=16).hexdigest(),
        signal=signal.value,
        segment=segment,
        detector=detector.spec.label,
        statistic=change.statistic,
        reference=change.reference,
        event_time=from_epoch_ms(t),
        window_start=from_epoch_ms(window_start),
        window_end=from_epoch_ms(window_end),
    )


def _feed_window(
    state: MonitorState,
    k: int,
    buffer: WindowBuffer,
    config: MonitorConfig,
    out: list[DriftDetection],
) -> None:
    start, end = k * config.window_ms, (k + 1) * config.window_ms
    feed = _Feed(state, start, end, config, out)
    _feed_events(feed, sorted(buffer.events.values()), end)
    _feed_slates(feed, sorted(buffer.slates.values()))
    _feed_outcomes(feed, sorted(buffer.outcomes.values()))


def _feed_events(feed: _Feed, events: Iterable[EventSeen], end: int) -> None:
    counts: dict[str, int] = {}
    labels: dict[str, str] = {}
    cold_users = cold_items = total = 0
    for event in events:
        label = labels.get(event.event_type)
        if label is None:
            label = labels[event.event_type] = f"event_type={event.event_type}"
        counts[label] = counts.get(label, 0) + 1
        feed.one_hot(Signal.EVENT_SHARE, label, event.event_time_ms)
        cold_users += event.cold_user
        cold_items += event.cold_item
        total += 1
    # Per window, not per event: the events of one user visit share their coldness, and
    # correlated 0/1 inputs break ADWIN's independence assumption (it false-alarms on them).
    if total:
        feed.update(Signal.COLD_USER_SHARE, ALL, cold_users / total, end - 1)
        feed.update(Signal.COLD_ITEM_SHARE, ALL, cold_items / total, end - 1)
    # Every type seen so far gets its count, zero included (a silent type is a signal).
    for label in list(feed.group(Signal.EVENT_SHARE)):
        feed.update(Signal.EVENT_RATE, label, float(counts.get(label, 0)), end - 1)


def _feed_slates(feed: _Feed, slates: Iterable[SlateServed]) -> None:
    exposure = feed.state.exposure
    labels: dict[str, str] = {}
    for slate in slates:
        t = slate.event_time_ms
        if slate.top_score is not None and math.isfinite(slate.top_score):
            feed.update(Signal.TOP_SCORE, ALL, slate.top_score, t)
        for item in slate.items:
            label = labels.get(item.source)
            if label is None:
                label = labels[item.source] = f"source={item.source}"
            feed.one_hot(Signal.SOURCE_SHARE, label, t)
            feed.update(Signal.COLD_SLOT_SHARE, ALL, 1.0 if item.cold else 0.0, t)
            stats = exposure.add(item.item_id)
            if stats is not None:
                js, gini, coverage = stats
                changed = feed.update(Signal.EXPOSURE_DECILE_JS, ALL, js, t)
                feed.update(Signal.EXPOSURE_GINI, ALL, gini, t)
                feed.update(Signal.CATALOGUE_COVERAGE, ALL, coverage, t)
                if changed is not None:
                    # The reference described the old regime: learn the new one, and restart
                    # the JS detector on it.
                    exposure.relearn()
                    feed.group(Signal.EXPOSURE_DECILE_JS).pop(ALL, None)


def _feed_outcomes(feed: _Feed, outcomes: Iterable[SlotOutcome]) -> None:
    arms: dict[str, str] = {}
    sources: dict[str, str] = {}
    for outcome in outcomes:
        t = outcome.event_time_ms
        arm = arms.get(outcome.arm)
        if arm is None:
            arm = arms[outcome.arm] = f"arm={outcome.arm}"
        source = sources.get(outcome.source)
        if source is None:
            source = sources[outcome.source] = f"source={outcome.source}"
        click = 1.0 if outcome.clicked else 0.0
        feed.update(Signal.CTR, arm, click, t)
        feed.update(Signal.CTR, source, click, t)
        feed.update(Signal.DISMISS_RATE, arm, 1.0 if outcome.dismissed else 0.0, t)


# -- pipeline samples --------------------------------------------------------------------------


def _apply_samples(
    state: MonitorState,
    samples: Iterable[PipelineSample],
    config: MonitorConfig,
    out: list[DriftDetection],
) -> None:
    for sample in sorted(samples, key=lambda s: (s.at_ms, s.sample_id)):
        key = (sample.at_ms, sample.sample_id)
        previous = state.last_sample
        if previous is not None and key <= previous:
            continue
        start = sample.at_ms if previous is None else previous[0]
        feed = _Feed(state, start, sample.at_ms + 1, config, out)
        t = sample.at_ms
        # A reading that is not a number is skipped: one NaN would poison a detector for good.
        if math.isfinite(sample.lag_seconds):
            feed.update(Signal.CONSUMER_LAG, ALL, float(sample.lag_seconds), t)
        if sample.freshness_seconds is not None and math.isfinite(sample.freshness_seconds):
            feed.update(Signal.FRESHNESS, ALL, float(sample.freshness_seconds), t)
        if sample.events > 0:
            feed.update(Signal.DEAD_LETTER_RATE, ALL, sample.dead_letters / sample.events, t)
        state.last_sample = key
