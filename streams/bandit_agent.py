"""Online bandit posteriors from the stream: attribution by user, posteriors by item.

Two steps over the pure functions of ``bandits`` (``bandits/__init__.py`` draws the pipeline):

=======================  ===========================================  ==========================
step (agent)             consumes                                     state (Redis)
=======================  ===========================================  ==========================
``on_attribution``       ``<ns>.impressions`` + ``<ns>.events`` +     ``AttributionState`` per
(in ``interactions``)    ``<ns>.privacy`` (keyed by user,             source partition number
                         co-partitioned)
``bandit_posteriors``    ``<ns>.bandit-outcomes`` (key item)          ``PosteriorState`` per item
=======================  ===========================================  ==========================

Attribution runs inside the ``interactions`` agent (``streams.app``), after the feature and
impression handlers of the same batch, so each user-keyed record crosses Faust once.
``on_attribution`` feeds every impression and interaction of partition *p* (Faust assigns
partition *p* of both topics to one worker) through ``bandits.attribution.attribute``; the
outcomes it decides are produced, keyed by item, to ``<ns>.bandit-outcomes`` and flushed, then the
partition states are committed (``MULTI``). A crash in between re-attributes the batch and
re-emits the same ``outcome_id``s, which ``bandits.posterior.apply_outcome`` ignores.
``bandit_posteriors`` folds outcomes into per-item states and writes, in one transaction, the
states and the posterior hashes in the layout ``bandits.posterior`` defines (the values are
absolute, so writing them again is harmless). Serving reads them with ``posterior_read_plan``.

Event-time rules: attribution decides in event time (watermark − lateness), de-duplicates
impressions by ``request_id`` and rewards by ``event_id``; posteriors are idempotent on
``outcome_id`` and order-insensitive (``bandits.discounted``). Undecodable records are skipped
here: the ``interactions`` agent's feature and impression steps send them to the dead-letter topic.
Late and future events are skipped likewise (the same steps route them).

Privacy (``streams.privacy``): impressions and rewards of users that the privacy markers
suppress are not attributed, and a ``delete`` request removes the user's pending impressions and
buffered rewards (the only user ids this agent holds) from the partition's state. The posteriors
are per-item aggregates and hold no user data.

Keys: ``<ns>:stream:bandit:attribution:<topic-partition number>`` and
``<ns>:stream:bandit:item:<item_id>`` (JSON of the states' ``to_dict``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import orjson
import redis
from confluent_kafka import Producer

from bandits import configs_from_settings
from bandits.attribution import AttributionState, attribute
from bandits.posterior import Outcome, PosteriorState, apply_outcome, prune_seen
from core.errors import DependencyUnavailable, SchemaError
from core.settings import Settings
from events import decode, decode_interaction
from events.models import Impression, Interaction, PrivacyAction, PrivacyRequest
from streams import worker_metrics
from streams.eventtime import Lateness, Verdict, judge
from streams.handlers import SourceRecord
from streams.privacy import suppresses
from streams.publish import flush_or_raise, produce_waiting
from streams.statestore import RedisStateStore
from streams.topics import TopicNames


def encode_outcome(outcome: Outcome) -> bytes:
    return orjson.dumps(dataclasses.asdict(outcome))


def decode_outcome(raw: bytes) -> Outcome:
    try:
        return Outcome(**orjson.loads(raw))
    except (ValueError, TypeError) as exc:
        raise SchemaError(f"bad bandit outcome: {exc}", reason="invalid_outcome") from None


def forget_users(data: dict[str, Any], user_ids: set[str]) -> dict[str, Any]:
    """An ``AttributionState.to_dict()`` without the pending impressions and buffered rewards
    of ``user_ids`` (privacy deletion; the seen-ids hold request and event ids only)."""
    return {
        **data,
        "pending": [p for p in data["pending"] if p["user_id"] not in user_ids],
        "rewards": {k: r for k, r in data["rewards"].items() if r["user_id"] not in user_ids},
    }


class BanditRuntime:
    def __init__(
        self,
        settings: Settings,
        *,
        client: redis.Redis,
        state: RedisStateStore,
        producer: Producer,
        policy: Lateness,
        now_ms: Any,
    ) -> None:
        self.settings = settings
        self.topics = TopicNames.for_settings(settings)
        self.client = client
        self.state = state  # for the privacy markers the interactions agent keeps
        self.producer = producer
        self.policy = policy
        self._now_ms = now_ms  # processing clock, for the "not from the future" check only
        self.attribution_config, self.posterior_config = configs_from_settings(settings)
        # An outcome id can come back only while its impression is within reach of the
        # item's newest outcome: the attribution window plus lateness, plus the same margin for
        # skew between source partitions that the item state uses (``streams.eventtime``).
        self._seen_margin_ms = (
            self.attribution_config.window_ms + policy.allowed_lateness_ms + policy.dedup_horizon_ms
        )
        self._max_bytes = settings.stream.max_event_bytes

    def _attribution_key(self, partition: int) -> str:
        return self.settings.redis_key("stream", "bandit", "attribution", str(partition))

    def _item_key(self, item_id: str) -> str:
        return self.settings.redis_key("stream", "bandit", "item", item_id)

    # -- agent 1: impressions + interactions, partitioned by user ------------------------------
    async def on_attribution(self, records: Sequence[SourceRecord]) -> list[Outcome]:
        by_partition: dict[int, list[Impression | Interaction]] = {}
        erase: dict[int, dict[str, int]] = {}  # partition -> user deleted in this batch -> time
        now = self._now_ms()
        for record in records:
            event = self._decode_source(record)
            if event is None:
                continue
            if isinstance(event, PrivacyRequest):
                if event.action is PrivacyAction.DELETE:
                    deleted = erase.setdefault(record.partition, {})
                    t = max(event.event_time_ms, deleted.get(event.user_id, event.event_time_ms))
                    deleted[event.user_id] = t
                continue
            if judge(None, event.event_time_ms, self.policy, now) is Verdict.FUTURE:
                continue
            by_partition.setdefault(record.partition, []).append(event)
        # The interactions agent may not have stored this batch's delete requests yet: they
        # suppress here as their markers will (events up to the deletion time).
        statuses = self.state.load_privacy(
            e.user_id for events in by_partition.values() for e in events
        )
        for partition, events in by_partition.items():
            gone = erase.get(partition, {})
            by_partition[partition] = [
                e
                for e in events
                if e.event_time_ms > gone.get(e.user_id, e.event_time_ms - 1)
                and not suppresses(statuses.get(e.user_id), e.event_time_ms)
            ]
        partitions = sorted(set(by_partition) | set(erase))
        if not partitions:
            return []
        raws = self._redis(
            "read attribution state",
            lambda: self.client.mget([self._attribution_key(p) for p in partitions]),
        )
        outcomes: list[Outcome] = []
        states: dict[int, AttributionState] = {}
        late = 0
        for partition, raw in zip(partitions, raws, strict=True):
            data = orjson.loads(raw) if raw else AttributionState().to_dict()
            if partition in erase:
                data = forget_users(data, set(erase[partition]))
            state = AttributionState.from_dict(data, self.attribution_config)
            for event in by_partition.get(partition, ()):
                state, outputs = attribute(state, event, self.attribution_config)
                for output in outputs:
                    if isinstance(output, Outcome):
                        outcomes.append(output)
                    elif output.reason == "late":
                        late += 1
            states[partition] = state
        for outcome in outcomes:
            self._produce(encode_outcome(outcome), outcome.item_id.encode())
        if outcomes:
            await self._flush()

        def commit() -> None:
            pipe = self.client.pipeline(transaction=True)
            pipe.mset(
                {self._attribution_key(p): orjson.dumps(s.to_dict()) for p, s in states.items()}
            )
            pipe.execute()

        self._redis("persist attribution state", commit)
        worker_metrics.EVENTS.labels("bandit-attribution", "outcome").inc(len(outcomes))
        if late:
            worker_metrics.EVENTS.labels("bandit-attribution", "late").inc(late)
        return outcomes

    def _decode_source(
        self, record: SourceRecord
    ) -> Impression | Interaction | PrivacyRequest | None:
        try:
            if record.topic == self.topics.impressions:
                return decode(record.value, Impression, max_bytes=self._max_bytes)
            if record.topic == self.topics.privacy:
                return decode(record.value, PrivacyRequest, max_bytes=self._max_bytes)
            return decode_interaction(record.value, max_bytes=self._max_bytes)
        except SchemaError:
            return None  # dead-lettered by the agent that owns the topic

    # -- agent 2: outcomes, partitioned by item ------------------------------------------------
    async def on_outcomes(self, records: Sequence[SourceRecord]) -> int:
        outcomes: list[Outcome] = []
        for record in records:
            try:
                outcomes.append(decode_outcome(record.value))
            except SchemaError:
                worker_metrics.EVENTS.labels(self.topics.bandit_outcomes, "dead_letter").inc()
        if not outcomes:
            return 0
        items = sorted({o.item_id for o in outcomes})
        raws = self._redis(
            "read posterior state",
            lambda: self.client.mget([self._item_key(i) for i in items]),
        )
        states = {
            i: PosteriorState.from_dict(orjson.loads(raw)) if raw else PosteriorState()
            for i, raw in zip(items, raws, strict=True)
        }
        writes: dict[tuple[str, str], str] = {}  # (hash key, field) -> latest absolute value
        applied = 0
        for outcome in outcomes:
            state, out = apply_outcome(states[outcome.item_id], outcome, self.posterior_config)
            applied += bool(out)
            for write in out:
                writes[(self.settings.redis_key(*write.hash_parts), write.field)] = write.value
        for state in states.values():
            if state.seen:
                prune_seen(state, max(state.seen.values()) - self._seen_margin_ms)

        def commit() -> None:
            pipe = self.client.pipeline(transaction=True)
            pipe.mset({self._item_key(i): orjson.dumps(s.to_dict()) for i, s in states.items()})
            for (key, field), value in writes.items():
                pipe.hset(key, field, value)
            pipe.execute()

        self._redis("persist posteriors", commit)
        worker_metrics.EVENTS.labels(self.topics.bandit_outcomes, "applied").inc(applied)
        worker_metrics.EVENTS.labels(self.topics.bandit_outcomes, "duplicate").inc(
            len(outcomes) - applied
        )
        return applied

    # -- adapters ------------------------------------------------------------------------------
    def _produce(self, value: bytes, key: bytes) -> None:
        produce_waiting(self.producer, self.topics.bandit_outcomes, value, key)

    async def _flush(self) -> None:
        await flush_or_raise(self.producer, "outcomes")

    @staticmethod
    def _redis(what: str, call: Any) -> Any:
        try:
            return call()
        except redis.RedisError as exc:
            raise DependencyUnavailable("redis", f"cannot {what}: {exc}") from exc
