"""The worker's drift monitors over raw records (``streams.drift_steps``), on the in-memory port:
a shift is detected, a re-delivered batch changes nothing, a crash before the commit loses
nothing, and outcomes are monitored per arm."""

from __future__ import annotations

import random

from bandits.posterior import Outcome
from events import decode, encode
from events.models import Impression, ImpressionItem
from monitoring import MonitorConfig
from monitoring.config import Signal
from streams.bandit_steps import encode_outcome
from streams.drift_steps import DriftConfig, DriftSteps
from streams.eventtime import Lateness
from streams.handlers import SourceRecord
from streams.state_port import InMemoryStateStore
from streams.topics import TopicNames

TOPICS = TopicNames(*(f"unit.{name}" for name in TopicNames.__dataclass_fields__))
T0 = 1_700_000_000_000
SHIFT_AT = 1_500  # slate index from which the ranker's top score moves up


def config() -> DriftConfig:
    monitor = MonitorConfig(window_ms=1_000, allowed_lateness_ms=2_000)
    return DriftConfig(
        topics=TOPICS,
        policy=Lateness(allowed_lateness_ms=2_000),
        user_monitor=monitor,
        outcome_monitor=monitor,
    )


def slates(n: int, seed: int = 7) -> list[SourceRecord]:
    """One slate every 100 ms on partition 0; top score N(0.5, 0.05), +0.3 from ``SHIFT_AT``."""
    rng = random.Random(seed)
    records = []
    for k in range(n):
        score = rng.gauss(0.5 + (0.3 if k >= SHIFT_AT else 0.0), 0.05)
        slate = Impression(
            request_id=f"r{k}",
            user_id=f"u{k % 50}",
            items=(
                ImpressionItem(
                    item_id=f"i{k % 97}", position=0, score=score, source="ann", propensity=1.0
                ),
                ImpressionItem(
                    item_id=f"i{k % 89}",
                    position=1,
                    score=score - 0.1,
                    source="fresh",
                    propensity=1.0,
                ),
            ),
            model_version="m@1",
            experiment_arm="ranker=sasrec",
            event_time=T0 + 100 * k,
        )
        records.append(SourceRecord(TOPICS.impressions, 0, k, encode(slate), b"u"))
    return records


def run(steps: DriftSteps, store: InMemoryStateStore, records: list[SourceRecord], size: int):
    found = []
    for start in range(0, len(records), size):
        effects = steps.user_records(store, records[start : start + size], now_ms=None)
        store.commit(effects.commit)
        found.extend(effects.detections)
    return found


def test_a_top_score_shift_is_detected_after_it_happened() -> None:
    store = InMemoryStateStore()
    found = run(DriftSteps(config()), store, slates(3_000), 250)
    shifts = [d for d in found if d.signal == Signal.TOP_SCORE.value]
    assert shifts, [d.signal for d in found]
    first = shifts[0]
    assert first.segment == "all" and first.statistic > first.reference
    assert first.event_time_ms >= T0 + 100 * SHIFT_AT
    assert store.offsets["drift"] == {(TOPICS.impressions, 0): 3_000}
    assert set(store.drift) == {"slates:0"}


def test_detections_do_not_depend_on_batching_redelivery_or_a_crash() -> None:
    records = slates(3_000)
    reference = run(DriftSteps(config()), InMemoryStateStore(), records, 250)

    store = InMemoryStateStore()
    steps = DriftSteps(config())
    found = run(steps, store, records[:1_200], 97)
    found += run(steps, store, records[1_000:1_300], 300)  # re-delivered, partly new
    # A crash after the detections were computed, before the commit: a new process (no cache)
    # gets the same records again.
    lost = steps.user_records(store, records[1_300:2_000], now_ms=None)
    assert lost.commit.drift  # computed, never committed
    found += run(steps, store, records[1_300:1_700], 150)  # the same process goes on
    found += run(DriftSteps(config()), store, records[1_600:], 400)  # and one restarted

    assert [d.detection_id for d in found] == [d.detection_id for d in reference]
    assert reference


def test_outcomes_are_monitored_per_arm_and_source() -> None:
    store = InMemoryStateStore()
    steps = DriftSteps(config())
    records = []
    for k in range(200):
        outcome = Outcome(
            outcome_id=f"r{k}|i{k}",
            item_id=f"i{k}",
            segment="all",
            impression_ms=T0 + 100 * k,
            success=k % 10 == 0,
            reason="positive" if k % 10 == 0 else "no_reward",
            arm="ranker=sasrec" if k % 2 else "",
            source="ann",
        )
        records.append(SourceRecord(TOPICS.bandit_outcomes, 1, k, encode_outcome(outcome)))
    records.append(SourceRecord(TOPICS.bandit_outcomes, 1, 200, b"{broken"))
    effects = steps.outcome_records(store, records)
    store.commit(effects.commit)
    assert store.offsets["drift_outcomes"] == {(TOPICS.bandit_outcomes, 1): 201}
    segments = {
        segment for signal, segment in effects.estimates["outcomes:1"] if signal == Signal.CTR
    }
    assert segments == {"arm=ranker=sasrec", "arm=none", "source=ann"}


def test_events_decoded_by_the_other_steps_are_used_as_they_are() -> None:
    records = slates(2_000)
    reference = run(DriftSteps(config()), InMemoryStateStore(), records, 500)
    store, steps, found = InMemoryStateStore(), DriftSteps(config()), []
    for start in range(0, len(records), 500):
        batch = records[start : start + 500]
        decoded = {
            (r.topic, r.partition, r.offset): decode(r.value, Impression) for r in batch[::2]
        }
        effects = steps.user_records(store, batch, now_ms=None, decoded=decoded)
        store.commit(effects.commit)
        found.extend(effects.detections)
    assert [d.detection_id for d in found] == [d.detection_id for d in reference]
    assert found
