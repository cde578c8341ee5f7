"""An in-memory harness that runs the worker's pure handlers with no broker (bytewax style).

``LocalPipeline`` wires the same handlers the Faust agents call, with dicts for state and
:class:`features.ports.InMemoryFeatureStore` for rows; tests, replays and the benchmark's
reference run use it to state what the real worker must produce.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import orjson

from events import decode, decode_interaction
from events.models import CatalogItem, Impression
from features.ports import InMemoryFeatureStore
from features.rows import ItemFeatureRow, UserFeatureRow
from streams import handlers, item_features, user_features
from streams.eventtime import Lateness
from streams.handlers import DeadLetter, Effects, SourceRecord
from streams.item_features import ItemState
from streams.user_features import UserFeatureConfig, UserState

EVENTS, IMPRESSIONS, ITEMS, ITEM_UPDATES = "events", "impressions", "items", "item-updates"


def interaction(event_id: str, user: str, item: str, event_type: str, t: int) -> dict[str, object]:
    """A valid events-topic payload as a dict (event time in epoch ms)."""
    return {
        "event_id": event_id,
        "event_type": event_type,
        "user_id": user,
        "item_id": item,
        "event_time": t,
    }


def partition_of(key: str, partitions: int = 2) -> int:
    """A stand-in partitioner for tests: stable, and spreads a handful of keys."""
    return sum(key.encode()) % partitions


def record(
    body: dict[str, object] | bytes, *, topic: str = EVENTS, partition: int | None = None
) -> SourceRecord:
    """A source record for ``body``, partitioned by its user (or item) id unless told."""
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    if partition is None:
        key = ""
        if isinstance(body, dict):
            key = str(body.get("user_id") or body.get("item_id") or "")
        partition = partition_of(key)
    return SourceRecord(topic, partition, 0, raw)


@dataclass
class LocalPipeline:
    policy: Lateness = field(default_factory=Lateness)
    config: UserFeatureConfig = field(default_factory=UserFeatureConfig)
    max_event_bytes: int = 64 * 1024
    now_ms: int | None = None  # processing time for the future check; None = no check
    users: dict[str, UserState] = field(default_factory=dict)
    items: dict[str, ItemState] = field(default_factory=dict)
    watermarks: dict[str, dict[int, int | None]] = field(default_factory=dict)
    store: InMemoryFeatureStore = field(default_factory=InMemoryFeatureStore)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    late: list[SourceRecord] = field(default_factory=list)
    applied: int = 0
    duplicates: int = 0
    _pending_updates: list[tuple[str, bytes]] = field(default_factory=list)

    def feed(self, records: Iterable[SourceRecord]) -> Effects:
        """Process one batch of source records (all from one topic), then the item side."""
        batch = list(records)
        topics = {r.topic for r in batch}
        if len(topics) > 1:
            raise ValueError(f"one topic per batch, got {sorted(topics)}")
        if not batch:
            return Effects()
        topic = batch[0].topic
        wms = self.watermarks.setdefault(topic, {})
        if topic == EVENTS:
            good, bad = handlers.decode_batch(
                batch, lambda raw: decode_interaction(raw, max_bytes=self.max_event_bytes)
            )
            effects = handlers.handle_interactions(
                good, self.users, wms, self.policy, self.config, self.now_ms
            )
        elif topic == IMPRESSIONS:
            good_i, bad = handlers.decode_batch(batch, lambda raw: decode(raw, Impression))
            effects = handlers.handle_impressions(good_i, wms, self.policy, self.now_ms)
        elif topic == ITEMS:
            good_c, bad = handlers.decode_batch(batch, lambda raw: decode(raw, CatalogItem))
            effects = handlers.handle_catalog(good_c, wms, self.policy, self.now_ms)
        else:
            raise ValueError(f"unknown source topic {topic!r}")
        effects.dead_letters[:0] = bad
        self._absorb(effects)
        self._pending_updates.extend(effects.forwards)
        self.drain()
        return effects

    def drain(self) -> None:
        """Run queued item updates through the item handler."""
        queued, self._pending_updates = self._pending_updates, []
        records = [SourceRecord(ITEM_UPDATES, 0, n, raw) for n, (_, raw) in enumerate(queued)]
        grouped, bad = handlers.decode_batch(records, handlers.decode_item_updates)
        good = handlers.flatten_updates(grouped)
        effects = handlers.handle_item_updates(good, self.items, self.policy)
        self.dead_letters.extend(bad)
        self.store.write_items(effects.item_rows)

    def _absorb(self, effects: Effects) -> None:
        self.store.write_users(effects.user_rows)
        self.dead_letters.extend(effects.dead_letters)
        self.late.extend(effects.late)
        self.applied += effects.applied
        self.duplicates += effects.duplicates

    # -- final views ---------------------------------------------------------------------------
    def user_rows(self) -> dict[str, UserFeatureRow]:
        return {
            u: user_features.user_row(u, s, self.config)
            for u, s in sorted(self.users.items())
            if s.latest_ms is not None
        }

    def item_rows(self) -> dict[str, ItemFeatureRow]:
        return {
            i: item_features.item_row(i, s)
            for i, s in sorted(self.items.items())
            if s.latest_ms is not None
        }
