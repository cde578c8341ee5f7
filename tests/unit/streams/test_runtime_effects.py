"""The agents' effect order (what makes a crash harmless), with fakes of the project's ports."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import orjson

from core.settings import Settings
from features.ports import InMemoryFeatureStore
from streams.agents import StreamRuntime
from streams.handlers import SourceRecord
from streams.state_port import InMemoryStateStore, StateCommit
from streams.steps import StepConfig, StreamSteps
from streams.testing import interaction
from streams.topics import TopicNames
from streams.transitions import merge_increments

T0 = 1_700_000_000_000


class Journal(list[str]):
    pass


class FakeProducer:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.sent: list[tuple[str, bytes]] = []

    def produce(
        self, topic: str, value: bytes, key: bytes | None = None, partition: int = -1
    ) -> None:
        self.sent.append((topic, value))

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        self.journal.append("flush")
        return 0


class JournalState(InMemoryStateStore):
    """The in-memory state store port, journaling its commits."""

    def __init__(self, journal: Journal) -> None:
        super().__init__()
        self.journal = journal

    def commit(self, changes: StateCommit) -> None:
        self.journal.append("commit")
        self.added = merge_increments(getattr(self, "added", {}), changes.transitions)
        super().commit(changes)


class JournalStore(InMemoryFeatureStore):
    def __init__(self, journal: Journal) -> None:
        super().__init__()
        self.journal = journal

    def write_users(self, rows: Any) -> None:
        self.journal.append("write_users")
        super().write_users(rows)

    def delete_users(self, user_ids: Any) -> None:
        self.journal.append("delete_users")
        super().delete_users(user_ids)


class FakeSinks:
    """Records what ``streams.sinks.StreamSinks`` would be asked to do; its outbox entries are
    the events' ids."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.logged: list[str] = []
        self.erased: list[str] = []

    def entries(self, events: Any = (), rows: Any = (), impressions: Any = ()) -> Any:
        self.logged += [e.event_id for e in events]
        return {"events": [",".join(e.event_id for e in events).encode()]} if events else {}

    def erase_user(self, user_id: str, store: Any) -> None:
        self.journal.append("erase_user")
        self.erased.append(user_id)


def runtime(
    sinks: FakeSinks | None = None,
) -> tuple[StreamRuntime, Journal, FakeProducer, JournalState, JournalStore]:
    journal = sinks.journal if sinks else Journal()
    producer, state, store = FakeProducer(journal), JournalState(journal), JournalStore(journal)
    topics = TopicNames.for_settings(Settings(namespace="unit"))
    rt = StreamRuntime(
        StreamSteps(StepConfig(topics)),
        writer=store,
        state=state,
        producer=producer,  # type: ignore[arg-type]
        sinks=sinks,  # type: ignore[arg-type]
    )
    return rt, journal, producer, state, store


def test_rows_are_written_before_the_forwards_are_flushed_and_both_before_the_commit() -> None:
    rt, journal, producer, _, store = runtime()
    records = [
        SourceRecord("unit.events", 0, 0, orjson.dumps(interaction("a", "u1", "i1", "view", T0))),
        SourceRecord("unit.events", 0, 1, b"not json"),
    ]
    asyncio.run(rt.on_interactions(records))
    # The feature rows first (they are the freshness), the state commit last.
    assert journal == ["write_users", "flush", "commit"]
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
    assert state.watermarks == {"unit.events": {0: T0 + 2}}


def _event(event_id: str, user: str, item: str, t: int, offset: int | None = None) -> SourceRecord:
    body = orjson.dumps(interaction(event_id, user, item, "view", t))
    return SourceRecord("unit.events", 0, next(_OFFSETS) if offset is None else offset, body)


def _privacy(event_id: str, user: str, action: str, t: int) -> SourceRecord:
    body = {"event_id": event_id, "user_id": user, "action": action, "event_time": t}
    return SourceRecord("unit.privacy", 0, next(_OFFSETS), orjson.dumps(body))


# Records at increasing offsets, as a broker appends them: the steps skip offsets they have
# committed (``streams.state_port.unconsumed_records``).
_OFFSETS = itertools.count(1000)


def test_applied_events_are_logged_and_transitions_ride_on_the_state_commit() -> None:
    sinks = FakeSinks(Journal())
    rt, journal, _, state, _ = runtime(sinks)
    batch = [_event("e1", "u1", "a", T0, 0), _event("e2", "u1", "b", T0 + 1, 1)]
    asyncio.run(rt.on_interactions(batch))
    asyncio.run(rt.on_interactions(batch))  # re-delivered: duplicates, nothing new
    assert journal[:3] == ["write_users", "flush", "commit"]
    # The offline rows ride on the state commit, once: the re-delivered batch adds none.
    assert sinks.logged == ["e1", "e2"]
    assert list(state.offline["events"].values()) == [b"e1,e2"]
    assert state.added == {("a", "b"): 1.0}  # added once, in the state commit


def test_a_delete_erases_every_store_and_keeps_in_flight_events_out() -> None:
    sinks = FakeSinks(Journal())
    rt, journal, _, state, store = runtime(sinks)
    asyncio.run(rt.on_interactions([_event("e1", "gone", "a", T0), _event("k1", "keep", "a", T0)]))
    journal.clear()
    in_flight = _event("e2", "gone", "b", T0 + 5)  # older than the request: never applied
    asyncio.run(rt.on_interactions([_privacy("p1", "gone", "delete", T0 + 10), in_flight]))
    assert journal == ["delete_users", "erase_user", "write_users", "commit"]
    assert "gone" not in state.users and store.read_users(["gone"]) == {}
    assert sinks.erased == ["gone"] and sinks.logged == ["e1", "k1"]
    asyncio.run(rt.on_interactions([in_flight]))  # a later batch: still suppressed
    asyncio.run(rt.on_interactions([_event("e3", "gone", "c", T0 + 20)]))  # new data
    assert store.read_users(["gone"])["gone"].recent_items == ("c",)


def test_an_opted_out_user_makes_no_features_until_opting_in() -> None:
    rt, _, _, state, store = runtime()
    asyncio.run(rt.on_interactions([_event("e1", "u1", "a", T0)]))
    asyncio.run(rt.on_interactions([_privacy("p1", "u1", "opt_out", T0 + 1)]))
    assert store.read_users(["u1"]) == {}
    asyncio.run(rt.on_interactions([_event("e2", "u1", "b", T0 + 2)]))
    assert store.read_users(["u1"]) == {} and state.users["u1"].latest_ms == T0
    asyncio.run(rt.on_interactions([_privacy("p2", "u1", "opt_in", T0 + 3)]))
    asyncio.run(rt.on_interactions([_event("e3", "u1", "c", T0 + 4)]))
    assert store.read_users(["u1"])["u1"].recent_items == ("a", "c")
