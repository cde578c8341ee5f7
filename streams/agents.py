"""What the Faust agents do with a batch: decode, call a pure handler, apply its effects.

``StreamRuntime`` holds the adapters (state store, feature writer, output producer, and the
optional ``StreamSinks``: offline log, feature history, transitions). The ``interactions`` agent
reads ``<ns>.events`` *and* ``<ns>.privacy`` (both keyed by user, co-partitioned), so a user's
privacy requests and events are handled by one agent, one batch at a time, never concurrently.
For every batch, effects are applied in an order that makes a crash at any point harmless:

1. item updates, dead letters and late events are produced and **flushed** (at-least-once;
   the item state de-duplicates re-forwarded updates); meanwhile, in a thread:
2. privacy erasure: online rows of deleted and opted-out users, offline data of deleted users
   (idempotent: a crash before step 5 re-delivers the request, whose marker is not yet stored,
   and the erasure runs again), then
3. applied events go to the offline log, rows to the feature history (at-least-once; readers
   drop re-delivered event ids, see ``streams.sinks``);
4. feature rows are written (idempotent: the store keeps the newer row, ties overwrite);
5. touched states, privacy markers, watermarks and the batch's item transitions are committed in
   one Redis transaction (deleted users' states are removed in it);
6. Faust acks the batch, so its offsets are committed only after all of the above.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from confluent_kafka import KafkaException, Producer

from core.settings import Settings
from events import decode, decode_interaction
from events.models import CatalogItem, Impression, PrivacyRequest
from features.ports import OnlineFeatureWriter
from streams import handlers, worker_metrics
from streams.codec import encode_dead_letter
from streams.eventtime import Lateness
from streams.handlers import Effects, SourceRecord
from streams.privacy import PrivacyEffects, handle_privacy, suppresses
from streams.publish import flush_or_raise, produce_waiting
from streams.sinks import StreamSinks
from streams.statestore import RedisStateStore
from streams.topics import TopicNames
from streams.user_features import UserFeatureConfig

log = logging.getLogger(__name__)
E = TypeVar("E")


class StreamRuntime:
    def __init__(
        self,
        settings: Settings,
        *,
        writer: OnlineFeatureWriter,
        state: RedisStateStore,
        producer: Producer | None = None,
        sinks: StreamSinks | None = None,
    ) -> None:
        self.settings = settings
        self.sinks = sinks
        self.topics = TopicNames.for_settings(settings)
        self.writer = writer
        self.state = state
        self.policy = Lateness(
            allowed_lateness_ms=settings.stream.allowed_lateness_ms,
            dedup_horizon_ms=settings.stream.dedup_horizon_ms,
            max_future_skew_ms=settings.stream.max_future_skew_ms,
        )
        self.config = UserFeatureConfig(sequence_length=settings.stream.sequence_length)
        self.producer = producer or Producer(
            {
                "bootstrap.servers": settings.kafka.bootstrap_servers,
                "linger.ms": 2,
                "enable.idempotence": False,
                "partitioner": "murmur2_random",
                "message.max.bytes": 4 * settings.stream.max_event_bytes + 65536,
            }
        )
        self._max_bytes = settings.stream.max_event_bytes

    # -- one method per agent ------------------------------------------------------------------
    async def on_interactions(self, records: Sequence[SourceRecord]) -> Effects:
        """A batch of ``<ns>.events`` and ``<ns>.privacy`` records (requests act first)."""
        requests_in = [r for r in records if r.topic == self.topics.privacy]
        events_in = [r for r in records if r.topic != self.topics.privacy]
        requests, bad_requests = handlers.decode_batch(
            requests_in, lambda raw: decode(raw, PrivacyRequest, max_bytes=self._max_bytes)
        )
        good, bad = handlers.decode_batch(
            events_in, lambda raw: decode_interaction(raw, max_bytes=self._max_bytes)
        )
        # One round trip: privacy markers and states of every user in the batch, watermarks.
        statuses, stored, watermarks = self.state.load_interaction_batch(
            [d.event.user_id for d in requests] + [d.event.user_id for d in good],
            self.topics.events,
            (r.partition for r in events_in),
        )
        privacy = handle_privacy(requests, statuses) if requests else PrivacyEffects()
        kept = [
            d for d in good if not suppresses(statuses.get(d.event.user_id), d.event.event_time_ms)
        ]
        # A user deleted in this batch starts from nothing (their stored state is being erased).
        kept_users = {d.event.user_id for d in kept} - privacy.delete
        users = {u: state for u, state in stored.items() if u in kept_users}
        effects = handlers.handle_interactions(
            kept, users, watermarks, self.policy, self.config, now_ms=now_ms()
        )
        effects.suppressed = len(good) - len(kept)
        effects.dead_letters[:0] = [*bad_requests, *bad]
        # Parquet and erasure I/O run in a thread while the producer flush is awaited.
        await asyncio.gather(self._emit(effects), _in_thread(self._offline, privacy, effects))
        self.writer.write_users(effects.user_rows)
        self.state.commit(
            topic=self.topics.events,
            watermarks=watermarks,
            users={u: users[u] for u in effects.touched},
            privacy={u: statuses[u] for u in privacy.touched},
            forget_users=privacy.delete,
            also=self.sinks.queue_transitions(effects.transitions) if self.sinks else None,
        )
        self._count(self.topics.events, effects, len(events_in))
        if requests_in:
            worker_metrics.EVENTS.labels(self.topics.privacy, "applied").inc(privacy.applied)
            worker_metrics.EVENTS.labels(self.topics.privacy, "duplicate").inc(privacy.duplicates)
        return effects

    def _offline(self, privacy: PrivacyEffects, effects: Effects) -> None:
        """Erasure first, so a deleted user's events after the deletion survive it."""
        self._erase(privacy)
        if self.sinks is not None:
            self.sinks.log_events(effects.applied_events)
            self.sinks.log_rows(effects.user_rows)

    def _erase(self, privacy: PrivacyEffects) -> None:
        """Privacy side effects of a batch; all idempotent (they may run again after a crash)."""
        hidden = sorted(privacy.delete | privacy.hide)
        if hidden:
            self.writer.delete_users(hidden)
        if self.sinks is not None:
            for user_id in sorted(privacy.delete):
                self.sinks.erase_user(user_id)
        if hidden:
            log.info("privacy: %d deleted, %d opted out", len(privacy.delete), len(privacy.hide))

    async def on_impressions(self, records: Sequence[SourceRecord]) -> Effects:
        return await self._forward_only(
            records,
            self.topics.impressions,
            lambda raw: decode(raw, Impression, max_bytes=self._max_bytes),
            handlers.handle_impressions,
        )

    async def on_catalog(self, records: Sequence[SourceRecord]) -> Effects:
        return await self._forward_only(
            records,
            self.topics.items,
            lambda raw: decode(raw, CatalogItem, max_bytes=self._max_bytes),
            handlers.handle_catalog,
        )

    async def on_item_updates(self, records: Sequence[SourceRecord]) -> Effects:
        grouped, bad = handlers.decode_batch(records, handlers.decode_item_updates)
        good = handlers.flatten_updates(grouped)
        items = self.state.load_items(d.event.item_id for d in good)
        effects = handlers.handle_item_updates(good, items, self.policy)
        effects.dead_letters[:0] = bad
        if self.sinks is not None:
            await asyncio.gather(
                self._emit(effects), _in_thread(self.sinks.log_rows, effects.item_rows)
            )
        else:
            await self._emit(effects)
        self.writer.write_items(effects.item_rows)
        self.state.commit(
            topic=self.topics.item_updates,
            watermarks={},
            items={i: items[i] for i in effects.touched},
        )
        self._count(self.topics.item_updates, effects, len(records))
        return effects

    async def _forward_only(
        self,
        records: Sequence[SourceRecord],
        topic: str,
        decoder: Callable[[bytes], E],
        handle: Callable[..., Effects],
    ) -> Effects:
        good, bad = handlers.decode_batch(records, decoder)
        watermarks = self.state.load_watermarks(topic, (r.partition for r in records))
        effects = handle(good, watermarks, self.policy, now_ms=now_ms())
        effects.dead_letters[:0] = bad
        await self._emit(effects)
        self.state.commit(topic=topic, watermarks=watermarks)
        self._count(topic, effects, len(records))
        return effects

    # -- effects -------------------------------------------------------------------------------
    async def _emit(self, effects: Effects) -> None:
        for item_id, payload in effects.forwards:
            self._produce(self.topics.item_updates, payload, item_id.encode())
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
        if effects.forwards or effects.dead_letters or effects.late:
            await self._flush()

    def _produce(self, topic: str, value: bytes, key: bytes | None) -> None:
        produce_waiting(self.producer, topic, value, key)

    async def _flush(self) -> None:
        await flush_or_raise(self.producer, "output messages")

    def _count(self, topic: str, effects: Effects, received: int) -> None:
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

    def close(self) -> None:
        with contextlib.suppress(KafkaException):  # shutting down: nothing more to do
            self.producer.flush(10.0)
        self.state.close()


def timed(agent: str) -> Any:
    """``with timed("events"):`` observes the batch duration histogram."""
    return worker_metrics.BATCH_SECONDS.labels(agent).time()


async def _in_thread(function: Callable[..., Any], *args: Any) -> None:
    await asyncio.get_running_loop().run_in_executor(None, function, *args)


def now_ms() -> int:
    """Processing time, for the "not from the future" validity check only (never a feature)."""
    return time.time_ns() // 1_000_000
