"""What the Faust agents do with a batch: call the shared steps, apply their effects, commit.

``StreamRuntime`` holds the adapters (the ``StateStore``, the feature writer, the output producer,
and the optional ``StreamSinks``: offline log, feature history) and calls ``streams.steps``
(decode → load → pure step), the same steps the harness ``streams.testing`` calls. The
``interactions`` agent reads ``<ns>.events`` *and* ``<ns>.privacy`` (both keyed by user,
co-partitioned), so a user's privacy requests and events are handled by one step, one batch at a
time, never concurrently. For every batch, effects are applied in an order that makes a crash at
any point harmless:

1. privacy erasure, when the batch has requests: online rows of deleted and opted-out users,
   offline data of deleted users (idempotent: a crash before step 4 re-delivers the request,
   whose marker is not yet stored, and the erasure runs again);
2. feature rows are written (idempotent: the store keeps the newer row, ties overwrite);
3. item updates, dead letters and late events are produced and **flushed** (at-least-once;
   the item state skips re-forwarded updates by their source offsets);
4. the step's ``StateCommit`` — touched states, privacy markers, watermarks, the batch's item
   transitions and its offline rows (applied events, feature rows, admitted slates: the outbox
   entries of ``streams.sinks``, which a flush moves into parquet) — is committed in one
   transaction (deleted users' states are removed in it);
5. Faust acks the batch, so its offsets are committed only after all of the above.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import KafkaException, Producer

from events.models import EVENT_TYPE_NAMES
from features.ports import OnlineFeatureWriter
from streams import worker_metrics
from streams.catalogue_content import CatalogueContent
from streams.codec import encode_dead_letter
from streams.handlers import Effects, SourceRecord
from streams.privacy import PrivacyEffects
from streams.publish import flush_or_raise, produce_forwards, produce_waiting
from streams.sinks import StreamSinks
from streams.state_port import StateStore
from streams.steps import StreamSteps
from streams.worker_metrics import stage_cpu

log = logging.getLogger(__name__)


class StreamRuntime:
    def __init__(
        self,
        steps: StreamSteps,
        *,
        writer: OnlineFeatureWriter,
        state: StateStore,
        producer: Producer,
        sinks: StreamSinks | None = None,
        content: CatalogueContent | None = None,
        clock: Callable[[], int] | None = None,
    ) -> None:
        self.steps = steps
        self.topics = steps.config.topics
        self.writer = writer
        self.state = state
        self.producer = producer
        self.sinks = sinks
        self.content = content
        self._now_ms = clock or now_ms  # processing clock, for the "not from the future" check
        self._max_bytes = steps.config.max_event_bytes

    # -- one method per agent ------------------------------------------------------------------
    async def on_interactions(self, records: Sequence[SourceRecord]) -> Effects:
        """A batch of ``<ns>.events`` and ``<ns>.privacy`` records (requests act first)."""
        with stage_cpu("user_step"):
            effects = self.steps.interactions(self.state, records, self._now_ms())
        if effects.privacy.delete or effects.privacy.hide:
            await _in_thread(self._erase, effects.privacy)
        # The feature rows before the flush: they are what freshness is (``aether bench ingest``).
        with stage_cpu("feature_rows"):
            self.writer.write_users(effects.user_rows)
        if self.sinks is not None:
            effects.commit.offline = self.sinks.entries(effects.applied_events, effects.user_rows)
        await self._emit(effects)
        with stage_cpu("state_commit"):
            self.state.commit(effects.commit)
        observe_freshness(records, self.topics.events)
        self._count(self.topics.events, effects)
        count_by_type(effects)
        if any(r.topic == self.topics.privacy for r in records):
            privacy = effects.privacy
            worker_metrics.EVENTS.labels(self.topics.privacy, "applied").inc(privacy.applied)
            worker_metrics.EVENTS.labels(self.topics.privacy, "duplicate").inc(privacy.duplicates)
        return effects

    def _erase(self, privacy: PrivacyEffects) -> None:
        """Privacy side effects of a batch; all idempotent (they may run again after a crash)."""
        hidden = sorted(privacy.delete | privacy.hide)
        if hidden:
            self.writer.delete_users(hidden)
        if self.sinks is not None:
            for user_id in sorted(privacy.delete):
                self.sinks.erase_user(user_id, self.state)
        if hidden:
            log.info("privacy: %d deleted, %d opted out", len(privacy.delete), len(privacy.hide))

    async def on_impressions(self, records: Sequence[SourceRecord]) -> Effects:
        """Served slates: one item update per shown item forwarded, the admitted slates into
        the offline outbox with the commit (as for events)."""
        with stage_cpu("user_step"):
            effects = self.steps.impressions(self.state, records, self._now_ms())
        if self.sinks is not None:
            effects.commit.offline = self.sinks.entries(impressions=effects.applied_impressions)
        await self._emit(effects)
        with stage_cpu("state_commit"):
            self.state.commit(effects.commit)
        self._count(self.topics.impressions, effects)
        return effects

    async def on_catalog(self, records: Sequence[SourceRecord]) -> Effects:
        """Catalogue updates: forwarded to the item side and, with a content writer, embedded
        into the content collection (in a thread, meanwhile), both before the commit."""
        with stage_cpu("item_step"):
            effects = self.steps.catalog(self.state, records, self._now_ms())
        if self.content is not None:
            late = {(r.partition, r.offset) for r in effects.late}
            admitted = [
                d.event
                for d in effects.decoded
                if (d.record.partition, d.record.offset) not in late
            ]
            await asyncio.gather(self._emit(effects), _in_thread(self.content.write, admitted))
        else:
            await self._emit(effects)
        with stage_cpu("state_commit"):
            self.state.commit(effects.commit)
        self._count(self.topics.items, effects)
        return effects

    async def on_item_updates(self, records: Sequence[SourceRecord]) -> Effects:
        with stage_cpu("item_step"):
            effects = self.steps.item_updates(self.state, records)
        with stage_cpu("feature_rows"):
            self.writer.write_items(effects.item_rows)
        if self.sinks is not None:
            effects.commit.offline = self.sinks.entries(rows=effects.item_rows)
        await self._emit(effects)
        with stage_cpu("state_commit"):
            self.state.commit(effects.commit)
        self._count(self.topics.item_updates, effects)
        return effects

    # -- effects -------------------------------------------------------------------------------
    async def _emit(self, effects: Effects) -> None:
        with stage_cpu("produce"):
            self._produce_outputs(effects)
        if effects.forwards or effects.dead_letters or effects.late:
            await self._flush()

    def _produce_outputs(self, effects: Effects) -> None:
        produce_forwards(self.producer, self.topics.item_updates, effects.forwards)
        for letter in effects.dead_letters:
            record = letter.record
            payload = encode_dead_letter(
                payload=record.value,
                reason=letter.reason,
                error=letter.error,
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                limit=self._max_bytes,
            )
            self._produce(self.topics.dead_letters, payload, record.key)
        for record in effects.late:
            self._produce(self.topics.late_events, record.value, record.key)

    def _produce(self, topic: str, value: bytes, key: bytes | None) -> None:
        produce_waiting(self.producer, topic, value, key)

    async def _flush(self) -> None:
        await flush_or_raise(self.producer, "output messages")

    def _count(self, topic: str, effects: Effects) -> None:
        worker_metrics.EVENTS.labels(topic, "applied").inc(effects.applied)
        worker_metrics.EVENTS.labels(topic, "duplicate").inc(effects.duplicates)
        if effects.suppressed:
            worker_metrics.EVENTS.labels(topic, "suppressed").inc(effects.suppressed)
        worker_metrics.EVENTS.labels(topic, "late").inc(len(effects.late))
        worker_metrics.EVENTS.labels(topic, "dead_letter").inc(len(effects.dead_letters))
        if effects.late:
            worker_metrics.LATE_EVENTS.labels(topic).inc(len(effects.late))
        reasons: dict[str, int] = {}
        for letter in effects.dead_letters:
            worker_metrics.DEAD_LETTERS.labels(letter.reason).inc()
            reasons[letter.reason] = reasons.get(letter.reason, 0) + 1
        if reasons:  # one line per batch, not per event: a flood of bad input must not flood logs
            log.warning("%s: %d dead letters %s", topic, len(effects.dead_letters), reasons)
        worker_metrics.ROWS_WRITTEN.labels("user").inc(len(effects.user_rows))
        worker_metrics.ROWS_WRITTEN.labels("item").inc(len(effects.item_rows))

    async def flush_offline(self) -> None:
        """The outboxes into parquet (``streams.sinks``), in a thread; a failure is logged (the
        entries stay, the next flush writes them)."""
        if self.sinks is None:
            return
        try:
            await _in_thread(self.sinks.flush, self.state)
        except Exception:
            worker_metrics.OFFLINE_FLUSH_FAILURES.inc()
            log.exception("offline: flushing the outboxes failed; the next flush tries again")

    def close(self) -> None:
        with contextlib.suppress(KafkaException):  # shutting down: nothing more to do
            self.producer.flush(10.0)
        if self.sinks is not None:
            try:
                self.sinks.flush(self.state)
            except Exception:  # stopping: what stays is flushed by the next worker
                log.exception("offline: the last flush of the outboxes failed")
        self.state.close()
        if self.content is not None:
            self.content.close()


def observe_freshness(records: Sequence[SourceRecord], topic: str) -> None:
    """Broker timestamp → features committed, per record of ``topic``."""
    now = time.time()
    worker_metrics.observe_many(
        worker_metrics.FRESHNESS,
        (
            max(0.0, now - record.timestamp_ms / 1000)
            for record in records
            if record.topic == topic and record.timestamp_ms is not None
        ),
    )


def count_by_type(effects: Effects) -> None:
    counts: dict[str, int] = {}
    for event in effects.applied_events:
        name = EVENT_TYPE_NAMES[event.event_type]
        counts[name] = counts.get(name, 0) + 1
    for event_type, n in counts.items():
        worker_metrics.EVENTS_BY_TYPE.labels(event_type).inc(n)


def timed(agent: str) -> Any:
    """``with timed("events"):`` observes the batch duration histogram."""
    return worker_metrics.BATCH_SECONDS.labels(agent).time()


def _in_thread(function: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
    """``function(*args)``, started in a thread now; await the future for its end."""
    return asyncio.get_running_loop().run_in_executor(None, function, *args)


def now_ms() -> int:
    """Processing time, for the "not from the future" validity check only (never a feature)."""
    return time.time_ns() // 1_000_000
