"""The bandit's runtime: the shared steps of ``streams.bandit_steps``, their effects, one commit.

Attribution runs inside the ``interactions`` agent (``streams.app``), after the feature and
impression steps of the same batch, so each user-keyed record crosses Faust once;
``bandit_posteriors`` consumes ``<ns>.bandit-outcomes`` (by item). Order of effects:

* ``on_attribution``: the partition states are committed with the decided outcomes, numbered
  per source partition, as their outbox; then the outcomes are produced to
  ``<ns>.bandit-outcomes``, one array per partition of their items, and flushed. A worker that
  rebuilds a state from the store (after a crash, a rebalance or a failed batch) first produces
  its stored outbox again; the posteriors skip an outcome whose number they have applied
  (``bandits.posterior.apply_outcome``), however long ago its id was forgotten.
* ``on_outcomes``: one commit holds the per-item states and the posterior hashes in the layout
  ``bandits.posterior`` defines (absolute values: writing them again is harmless). Serving reads
  them with ``posterior_read_plan``.

Keys: see ``streams.statestore``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from confluent_kafka import Producer

from bandits.attribution import Input
from bandits.posterior import Outcome
from streams import worker_metrics
from streams.bandit_steps import (
    AttributionEffects,
    BanditSteps,
    InputPartition,
    LiveAttribution,
    outcome_messages,
)
from streams.handlers import Position, SourceRecord
from streams.publish import flush_or_raise, produce_forwards
from streams.state_port import StateStore
from streams.worker_metrics import stage_cpu

NO_ARM = "none"  # the arm label of slates served outside any experiment (as serving's metrics)


class BanditRuntime:
    def __init__(
        self,
        steps: BanditSteps,
        *,
        state: StateStore,
        producer: Producer,
        now_ms: Callable[[], int],
        idle_timeout_s: float = 0.0,
        wall_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.steps = steps
        self.topics = steps.config.topics
        self.state = state
        self.producer = producer
        self._now_ms = now_ms  # processing clock, for the "not from the future" check only
        # The idleness rule (``bandit_steps.idle_inputs_step``): wall time since the last record
        # of each input topic (impressions, events) of each owned partition.
        # ``assigned_partitions`` (set by ``streams.app``) says which partitions this worker owns
        # now; without it, those it has seen records from.
        self.idle_timeout_s = idle_timeout_s
        self.assigned_partitions: Callable[[], Iterable[int]] | None = None
        self._wall_clock = wall_clock
        self._started = wall_clock()
        self._last_record: dict[InputPartition, float] = {}
        self._first_record: dict[int, float] = {}  # partition -> wall time of its first record
        # The attribution states this worker committed last (``LiveAttribution``): a batch
        # rebuilds a partition's state from its snapshot only when the stored one changed.
        self._live = LiveAttribution()

    # -- agent 1: impressions + interactions + privacy, partitioned by user --------------------
    async def on_attribution(
        self, records: Sequence[SourceRecord], decoded: Mapping[Position, object] | None = None
    ) -> list[Outcome]:
        """``decoded``: what the batch's feature and impression steps decoded already."""
        with stage_cpu("attribution"):
            effects = self.steps.attribution(
                self.state, records, self._now_ms(), decoded, self._live
            )
        await self._publish_and_commit(effects)
        if effects.late:
            worker_metrics.EVENTS.labels("bandit-attribution", "late").inc(effects.late)
        return effects.outcomes + await self._advance_idle(records)

    async def _publish_and_commit(self, effects: AttributionEffects) -> None:
        """The outboxes of states rebuilt from the store go out first (their batch's worker may
        have stopped before producing them); then the commit, whose outbox holds this batch's
        numbered outcomes; then those. A crash anywhere produces some outcomes again, with their
        numbers, which the posteriors skip (``bandits.posterior.apply_outcome``); none is lost.
        The states become ``live`` only once their outcomes are out: after a failure here the
        next batch rebuilds them, and so produces their outbox again."""
        await self._produce(effects.reemit)
        if effects.reemit:  # an operator sees restarts and rebalances re-send outboxes
            worker_metrics.EVENTS.labels("bandit-attribution", "outcome_again").inc(
                len(effects.reemit)
            )
        with stage_cpu("state_commit"):
            self.state.commit(effects.commit)
        await self._produce(effects.outcomes)
        self._live.committed(effects)
        live = self._live
        worker_metrics.ATTRIBUTION_STATES.labels("kept").inc(live.kept)
        worker_metrics.ATTRIBUTION_STATES.labels("rebuilt").inc(live.rebuilt)
        live.kept = live.rebuilt = 0
        worker_metrics.EVENTS.labels("bandit-attribution", "outcome").inc(len(effects.outcomes))
        count_by_arm(effects.outcomes)

    async def _produce(self, outcomes: Sequence[Outcome]) -> None:
        with stage_cpu("produce"):
            messages = outcome_messages(outcomes, self.steps.config.partitions)
            produce_forwards(self.producer, self.topics.bandit_outcomes, messages)
        if outcomes:
            await flush_or_raise(self.producer, "outcomes")

    def idle_split(
        self, records: Sequence[SourceRecord]
    ) -> tuple[list[InputPartition], list[InputPartition]]:
        """``(idle, active)`` inputs of the owned partitions, after noting the batch's own as
        active. An input without a record yet counts from its partition's first record (a slow
        start is no silence), or from the worker's start when the partition has had none."""
        now = self._wall_clock()
        for record in records:
            source = self.steps.config.input_of(record.topic)
            if source is not None:
                self._last_record[(source, record.partition)] = now
                self._first_record.setdefault(record.partition, now)
        if self.assigned_partitions is not None:
            partitions = set(self.assigned_partitions())
        else:
            partitions = set(self._first_record)
        owned = {(source, p) for p in partitions for source in Input}

        def silent_since(source: Input, partition: int) -> float:
            first = self._first_record.get(partition, self._started)
            return self._last_record.get((source, partition), first)

        idle = sorted(i for i in owned if now - silent_since(*i) > self.idle_timeout_s)
        return idle, sorted(owned - set(idle))

    async def _advance_idle(self, records: Sequence[SourceRecord]) -> list[Outcome]:
        if self.idle_timeout_s <= 0:
            return []
        idle, active = self.idle_split(records)
        for source in Input:
            worker_metrics.ATTRIBUTION_IDLE_INPUTS.labels(source.value).set(
                sum(s is source for s, _ in idle)
            )
        with stage_cpu("attribution"):
            effects = self.steps.advance_idle(self.state, idle, active, self._live)
        if effects.commit.is_empty():
            return []
        await self._publish_and_commit(effects)
        return effects.outcomes

    # -- agent 2: outcomes, partitioned by item ------------------------------------------------
    async def on_outcomes(self, records: Sequence[SourceRecord]) -> int:
        with stage_cpu("posteriors"):
            effects = self.steps.outcomes(self.state, records)
        topic = self.topics.bandit_outcomes
        if effects.bad:
            worker_metrics.EVENTS.labels(topic, "dead_letter").inc(effects.bad)
        if effects.applied or effects.duplicates:
            with stage_cpu("state_commit"):
                self.state.commit(effects.commit)
            worker_metrics.EVENTS.labels(topic, "applied").inc(effects.applied)
            worker_metrics.EVENTS.labels(topic, "duplicate").inc(effects.duplicates)
            worker_metrics.POSTERIOR_UPDATES.inc(effects.applied)
        return effects.applied


def count_by_arm(outcomes: Sequence[Outcome]) -> None:
    """Impressions, rewards and dismissals per arm: one decided (request, item) slot each."""
    tallies: dict[str, list[int]] = {}
    for outcome in outcomes:
        tally = tallies.setdefault(outcome.arm or NO_ARM, [0, 0, 0])
        tally[0] += 1
        tally[1] += outcome.success
        tally[2] += outcome.reason == "dismiss"
    for arm, (shown, clicked, dismissed) in tallies.items():
        worker_metrics.BANDIT_IMPRESSIONS.labels(arm).inc(shown)
        worker_metrics.BANDIT_REWARDS.labels(arm).inc(clicked)
        worker_metrics.BANDIT_DISMISSALS.labels(arm).inc(dismissed)
