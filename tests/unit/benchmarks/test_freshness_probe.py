"""``benchmarks.ingest.FreshnessProbe`` with an in-memory store and producer: probes go out on
schedule while earlier ones are not yet visible (open loop), each visible one gives a latency,
and one never visible is counted as lost."""

from __future__ import annotations

import threading
from typing import Any

import orjson

from benchmarks.ingest import FreshnessProbe
from core.settings import Settings


class _Producer:
    def __init__(self) -> None:
        self.users: list[str] = []
        self.changed = threading.Condition()

    def produce(self, topic: str, key: bytes, value: bytes) -> None:
        with self.changed:
            self.users.append(orjson.loads(value)["user_id"])
            self.changed.notify_all()

    def flush(self, timeout: float) -> int:
        return 0

    def wait_for(self, count: int) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: len(self.users) >= count, 30)


class _Store:
    """Rows become visible once ``shown`` is set, except those of ``hidden`` users."""

    def __init__(self) -> None:
        self.shown = threading.Event()
        self.hidden: set[str] = set()

    def read_users(self, users: list[str]) -> dict[str, Any]:
        if not self.shown.is_set():
            return {}
        return {user: object() for user in users if user not in self.hidden}


def _probe(store: _Store, producer: _Producer, timeout_s: float = 10.0) -> FreshnessProbe:
    return FreshnessProbe(
        Settings(), lambda: 0, interval_s=0.001, timeout_s=timeout_s, store=store, producer=producer
    )


def test_probes_go_out_while_earlier_ones_are_not_yet_visible() -> None:
    store, producer = _Store(), _Producer()
    probe = _probe(store, producer)
    probe.start()
    try:
        assert producer.wait_for(5)  # a closed loop would wait for the first to be visible
    finally:
        store.shown.set()
        probe.stop_flag.set()
        probe.join(30)
    assert not probe.is_alive()
    assert len(probe.latencies_ms) == len(producer.users) >= 5  # each waited for, after stop too
    assert all(latency >= 0 for latency in probe.latencies_ms) and probe.lost == 0


def test_a_probe_never_visible_is_counted_as_lost() -> None:
    store, producer = _Store(), _Producer()
    probe = _probe(store, producer, timeout_s=0.2)
    probe.start()
    assert producer.wait_for(1)
    store.hidden.add(producer.users[0])
    store.shown.set()
    probe.stop_flag.set()
    probe.join(30)
    assert not probe.is_alive()
    assert probe.lost == 1 and len(probe.latencies_ms) == len(producer.users) - 1
