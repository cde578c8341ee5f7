"""The agents' effect order (what makes a crash harmless), with fakes for the three adapters."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from aether.settings import Settings
from features.ports import InMemoryFeatureStore
from streams.agents import StreamRuntime
from streams.handlers import SourceRecord
from streams.item_features import ItemState
from streams.testing import interaction
from streams.user_features import UserState

T0 = 1_700_000_000_000


class Journal(list[str]):
    pass


class FakeProducer:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.sent: list[tuple[str, bytes]] = []

    def produce(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        self.sent.append((topic, value))

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        self.journal.append("flush")
        return 0


class FakeState:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.users: dict[str, UserState] = {}
        self.items: dict[str, ItemState] = {}
        self.watermarks: dict[tuple[str, int], int] = {}

    def load_users(self, ids: Any) -> dict[str, UserState]:
        return {u: self.users[u] for u in ids if u in self.users}

    def load_items(self, ids: Any) -> dict[str, ItemState]:
        return {i: self.items[i] for i in ids if i in self.items}

    def load_watermarks(self, topic: str, partitions: Any) -> dict[int, int | None]:
        return {p: self.watermarks.get((topic, p)) for p in partitions}

    def commit(self, *, topic: str, watermarks: Any, users: Any = None, items: Any = None) -> None:
        self.journal.append("commit")
        self.users.update(users or {})
        self.items.update(items or {})
        self.watermarks.update({(topic, p): w for p, w in watermarks.items() if w is not None})

    def close(self) -> None:
        pass


class JournalStore(InMemoryFeatureStore):
    def __init__(self, journal: Journal) -> None:
        super().__init__()
        self.journal = journal

    def write_users(self, rows: Any) -> None:
        self.journal.append("write_users")
        super().write_users(rows)


def runtime() -> tuple[StreamRuntime, Journal, FakeProducer, FakeState, JournalStore]:
    journal = Journal()
    producer, state, store = FakeProducer(journal), FakeState(journal), JournalStore(journal)
    rt = StreamRuntime(
        Settings(namespace="unit"),
        writer=store,
        state=state,  # type: ignore[arg-type]
        producer=producer,  # type: ignore[arg-type]
    )
    return rt, journal, producer, state, store


def test_forwards_are_flushed_before_rows_and_rows_before_the_state_commit() -> None:
    rt, journal, producer, _, store = runtime()
    records = [
        SourceRecord("unit.events", 0, 0, orjson.dumps(interaction("a", "u1", "i1", "view", T0))),
        SourceRecord("unit.events", 0, 1, b"not json"),
    ]
    asyncio.run(rt.on_interactions(records))
    assert journal == ["flush", "write_users", "commit"]
    assert sorted(topic for topic, _ in producer.sent) == ["unit.dead-letters", "unit.item-updates"]
    assert store.read_users(["u1"])["u1"].recent_items == ("i1",)


def test_a_redelivered_batch_after_a_crash_changes_nothing() -> None:
    rt, _, producer, state, store = runtime()
    batch = [
        SourceRecord(
            "unit.events", 0, n, orjson.dumps(interaction(f"e{n}", "u1", "i1", "click", T0 + n))
        )
        for n in range(3)
    ]
    asyncio.run(rt.on_interactions(batch))
    forwarded = [value for topic, value in producer.sent if topic == "unit.item-updates"]
    updates = [SourceRecord("unit.item-updates", 0, n, v) for n, v in enumerate(forwarded)]
    asyncio.run(rt.on_item_updates(updates))
    before = (store.read_users(["u1"]), store.read_items(["i1"]))
    asyncio.run(rt.on_interactions(batch))  # offsets were not committed: delivered again
    asyncio.run(rt.on_item_updates(updates))
    assert (store.read_users(["u1"]), store.read_items(["i1"])) == before
    assert before[1]["i1"].clicks == 3
    assert state.watermarks == {("unit.events", 0): T0 + 2}
