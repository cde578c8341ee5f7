"""What the Faust agents do with a batch: decode, call a pure handler, apply its effects.

``StreamRuntime`` holds the adapters (state store, feature writer, output producer). For every
batch, effects are applied in an order that makes a crash at any point harmless:

1. item updates, dead letters and late events are produced and **flushed** (at-least-once;
   the item state de-duplicates re-forwarded updates);
2. feature rows are written (idempotent: the store keeps the newer row, ties overwrite);
3. touched states and watermarks are committed in one Redis transaction;
4. Faust acks the batch, so its offsets are committed only after all of the above.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from confluent_kafka import KafkaException, Producer

from aether.errors import DependencyUnavailable
from aether.settings import Settings
from events import decode, decode_interaction
from events.models import CatalogItem, Impression
from features.ports import OnlineFeatureWriter
from streams import handlers, metrics
from streams.codec import encode_dead_letter
from streams.eventtime import Lateness
from streams.handlers import Effects, SourceRecord
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
    ) -> None:
        self.settings = settings
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
        good, bad = handlers.decode_batch(
            records, lambda raw: decode_interaction(raw, max_bytes=self._max_bytes)
        )
        users = self.state.load_users(d.event.user_id for d in good)
        watermarks = self.state.load_watermarks(self.topics.events, (r.partition for r in records))
        effects = handlers.handle_interactions(
            good, users, watermarks, self.policy, self.config, now_ms=_now_ms()
        )
        effects.dead_letters[:0] = bad
        await self._emit(effects)
        self.writer.write_users(effects.user_rows)
        self.state.commit(
            topic=self.topics.events,
            watermarks=watermarks,
            users={u: users[u] for u in effects.touched},
        )
        self._count(self.topics.events, effects, len(records))
        return effects

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
        good, bad = handlers.decode_batch(records, handlers.decode_item_update)
        items = self.state.load_items(d.event.item_id for d in good)
        effects = handlers.handle_item_updates(good, items, self.policy)
        effects.dead_letters[:0] = bad
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
        effects = handle(good, watermarks, self.policy, now_ms=_now_ms())
        effects.dead_letters[:0] = bad
        await self._emit(effects)
        self.state.commit(topic=topic, watermarks=watermarks)
        self._count(topic, effects, len(records))
        return effects

    # -- effects -------------------------------------------------------------------------------
    async def _emit(self, effects: Effects) -> None:
        produce = self.producer.produce
        for item_id, payload in effects.forwards:
            self._produce(produce, self.topics.item_updates, payload, item_id.encode())
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
            self._produce(produce, self.topics.dead_letters, payload, record.key)
        for record in effects.late:
            self._produce(produce, self.topics.late_events, record.value, record.key)
        if effects.forwards or effects.dead_letters or effects.late:
            await self._flush()

    def _produce(
        self, produce: Callable[..., Any], topic: str, value: bytes, key: bytes | None
    ) -> None:
        while True:
            try:
                produce(topic, value=value, key=key)
                return
            except BufferError:  # local queue full: let deliveries drain, then retry
                self.producer.poll(0.05)

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        remaining = await loop.run_in_executor(None, self.producer.flush, 30.0)
        if remaining:
            raise DependencyUnavailable("kafka", f"{remaining} output messages not acknowledged")

    def _count(self, topic: str, effects: Effects, received: int) -> None:
        metrics.EVENTS.labels(topic, "applied").inc(effects.applied)
        metrics.EVENTS.labels(topic, "duplicate").inc(effects.duplicates)
        metrics.EVENTS.labels(topic, "late").inc(len(effects.late))
        metrics.EVENTS.labels(topic, "dead_letter").inc(len(effects.dead_letters))
        if effects.late:
            metrics.LATE_EVENTS.labels(topic).inc(len(effects.late))
        reasons: dict[str, int] = {}
        for letter in effects.dead_letters:
            metrics.DEAD_LETTERS.labels(letter.reason).inc()
            reasons[letter.reason] = reasons.get(letter.reason, 0) + 1
        if reasons:  # one line per batch, not per event: a flood of bad input must not flood logs
            log.warning("%s: %d dead letters %s", topic, len(effects.dead_letters), reasons)
        metrics.ROWS_WRITTEN.labels("user").inc(len(effects.user_rows))
        metrics.ROWS_WRITTEN.labels("item").inc(len(effects.item_rows))

    def close(self) -> None:
        with contextlib.suppress(KafkaException):  # shutting down: nothing more to do
            self.producer.flush(10.0)
        self.state.close()


def timed(agent: str) -> Any:
    """``with timed("events"):`` observes the batch duration histogram."""
    return metrics.BATCH_SECONDS.labels(agent).time()


def _now_ms() -> int:
    """Processing time, for the "not from the future" validity check only (never a feature)."""
    return time.time_ns() // 1_000_000
