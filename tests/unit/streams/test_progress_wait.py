"""``streams.progress.wait_until_caught_up`` fails on a stalled worker, never on a slow one: its
limit is the time without a new commit, not the whole wait (a CI machine at load average 13 once
took longer than a fixed deadline to apply 2,000 events)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from core.errors import DependencyUnavailable
from core.settings import Settings
from streams import progress


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def offsets_from(readings: list[tuple[int, int]], monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """``group_offsets`` answers ``readings`` in turn (the last one for ever); the returned list
    counts the reads."""
    reads: list[int] = []
    it: Iterator[tuple[int, int]] = iter(readings)
    last = readings[-1]

    def fake(settings: Settings, topics: list[str]) -> tuple[int, int]:
        reads.append(1)
        return next(it, last)

    monkeypatch.setattr(progress, "group_offsets", fake)
    monkeypatch.setattr(progress, "offline_pending", lambda settings: 0)
    return reads


def wait(stall_s: float, clock: FakeClock) -> None:
    progress.wait_until_caught_up(
        Settings(namespace="unit"), stall_s, clock=clock, sleep=clock.sleep
    )


def test_a_slow_worker_that_keeps_committing_is_waited_for_past_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One message committed per second for 100 s, against a 10 s limit.
    readings = [(n, 100) for n in range(101)]
    reads = offsets_from(readings, monkeypatch)
    clock = FakeClock()
    wait(10, clock)
    assert len(reads) == 101 and clock.now == 100


def test_a_worker_that_commits_nothing_fails_after_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    offsets_from([(0, 50), (20, 60), (30, 70)], monkeypatch)  # then stuck at 30 of 70
    clock = FakeClock()
    with pytest.raises(DependencyUnavailable, match=r"still 40 messages behind.*last 5s"):
        wait(5, clock)
    assert 7 <= clock.now <= 9  # the last commit was read at t = 2 s


def test_growing_topics_do_not_count_as_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    # The worker produces item updates to its own input, so the end moves while nothing commits.
    offsets_from([(10, 20 + n) for n in range(100)], monkeypatch)
    with pytest.raises(DependencyUnavailable):
        wait(5, FakeClock())


def test_caught_up_returns_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    reads = offsets_from([(70, 70)], monkeypatch)
    clock = FakeClock()
    wait(5, clock)
    assert reads == [1] and clock.now == 0


def test_caught_up_waits_for_the_offline_outboxes_to_be_flushed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    offsets_from([(100, 100)], monkeypatch)
    pending = iter([3, 3, 1, 0])
    monkeypatch.setattr(progress, "offline_pending", lambda settings: next(pending))
    clock = FakeClock()
    wait(1, clock)  # a flush a second: waited for, never a stall
    assert clock.now == 3 and next(pending, None) is None
