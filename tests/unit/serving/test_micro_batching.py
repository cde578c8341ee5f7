"""``serving.batching.MicroBatcher``: who waits for whom, what a batch shares, how it fails.

Threads meet through the batcher's own rules (expected requests, running batches), never
through sleeps; a window or deadline that must *not* be waited out is an hour long, so a wrong
wait would hang the test (pytest-timeout) rather than pass.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from serving.batching import MicroBatcher, isolated

HOUR = 3600.0


class Recorder:
    """A batch call that records each batch and answers ``item * 10``; it can hold a batch
    until released, or fail on an item."""

    def __init__(self, *, hold: threading.Event | None = None, fail_on: object = None) -> None:
        self.batches: list[tuple[object, list[int]]] = []
        self.started = threading.Event()
        self.hold = hold
        self.fail_on = fail_on
        self._lock = threading.Lock()

    def __call__(self, key: object, items: list[int]) -> list[object]:
        with self._lock:
            self.batches.append((key, list(items)))
        self.started.set()
        if self.hold is not None:
            self.hold.wait()
        if self.fail_on is not None and self.fail_on in items:
            raise RuntimeError("the dependency is down")
        return [item * 10 for item in items]


def in_threads(*calls: Callable[[], object]) -> list[object]:
    """Run each call on its own thread; their answers (or exceptions), in order."""
    answers: list[object] = [None] * len(calls)

    def run(n: int, call: Callable[[], object]) -> None:
        try:
            answers[n] = call()
        except Exception as exc:
            answers[n] = exc

    threads = [threading.Thread(target=run, args=(n, c)) for n, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def test_an_idle_batcher_runs_the_first_request_at_once():
    call = Recorder()
    batcher = MicroBatcher("t", call, window_s=HOUR)
    assert batcher.submit("k", 4) == 40  # an hour-long window, and no wait: nothing else flies
    assert call.batches == [("k", [4])]


def test_expected_requests_are_waited_for_and_share_one_call():
    call = Recorder()
    batcher = MicroBatcher("t", call, window_s=HOUR)
    tickets = [batcher.expect() for _ in range(3)]  # three requests on their way
    answers = in_threads(
        *(lambda n=n: batcher.submit("k", n, expected=tickets[n]) for n in range(3))
    )
    assert answers == [0, 10, 20]
    assert len(call.batches) == 1 and sorted(call.batches[0][1]) == [0, 1, 2]


def test_a_request_that_leaves_without_coming_stops_the_wait():
    call = Recorder()
    batcher = MicroBatcher("t", call, window_s=HOUR)
    coming, leaving = batcher.expect(), batcher.expect()
    leaving.done()
    leaving.done()  # idempotent: counted once
    assert batcher.submit("k", 1, expected=coming) == 10
    assert call.batches == [("k", [1])]


def test_the_window_bounds_the_wait_for_a_request_that_never_comes():
    call = Recorder()
    batcher = MicroBatcher("t", call, window_s=0.001)
    batcher.expect()  # never submits, never leaves
    assert batcher.submit("k", 2) == 20
    assert call.batches == [("k", [2])]


def test_a_batch_never_waits_past_its_earliest_deadline():
    call = Recorder()
    batcher = MicroBatcher("t", call, window_s=HOUR)
    batcher.expect()
    assert batcher.submit("k", 3, deadline_s=0.001) == 30  # an hour-long window: the deadline
    assert batcher.submit("k", 5, deadline_s=-1.0) == 50  # already past: no wait at all
    assert [items for _, items in call.batches] == [[3], [5]]


def test_requests_arriving_while_a_batch_runs_form_the_next_batch():
    release = threading.Event()
    call = Recorder(hold=release)
    batcher = MicroBatcher("t", call, window_s=HOUR)
    first = threading.Thread(target=batcher.submit, args=("k", 1))
    first.start()
    call.started.wait()  # batch [1] is running and held
    later = [batcher.expect() for _ in range(2)]
    results: list[object] = []
    joiners = [
        threading.Thread(
            target=lambda n=n: results.append(batcher.submit("k", n, expected=later[n - 2]))
        )
        for n in (2, 3)
    ]
    for thread in joiners:
        thread.start()
    release.set()
    first.join()
    for thread in joiners:
        thread.join()
    assert sorted(results) == [20, 30]
    assert [sorted(items) for _, items in call.batches] == [[1], [2, 3]]


def test_keys_never_share_a_batch():
    call = Recorder()
    batcher = MicroBatcher("t", call, window_s=HOUR)
    tickets = [batcher.expect() for _ in range(4)]
    keys = ["release-a", "release-b", "release-a", "release-b"]
    answers = in_threads(
        *(lambda n=n: batcher.submit(keys[n], n, expected=tickets[n]) for n in range(4))
    )
    assert answers == [0, 10, 20, 30]
    for key, items in call.batches:
        assert {keys[n] for n in items} == {key}
    assert sorted(n for _, items in call.batches for n in items) == [0, 1, 2, 3]


def test_a_full_batch_runs_without_waiting_for_more():
    call = Recorder()
    batcher = MicroBatcher("t", call, window_s=HOUR, max_size=2)
    tickets = [batcher.expect() for _ in range(3)]
    answers = in_threads(
        *(lambda n=n: batcher.submit("k", n, expected=tickets[n]) for n in range(2))
    )
    assert answers == [0, 10]  # the third expected request never came: the full batch went
    assert [sorted(items) for _, items in call.batches] == [[0, 1]]
    tickets[2].done()


def test_a_failed_call_fails_every_member_and_the_batcher_goes_on():
    call = Recorder(fail_on=1)
    batcher = MicroBatcher("t", call, window_s=HOUR)
    tickets = [batcher.expect() for _ in range(2)]
    answers = in_threads(
        *(lambda n=n: batcher.submit("k", n, expected=tickets[n]) for n in range(2))
    )
    assert all(isinstance(a, RuntimeError) for a in answers)
    assert batcher.submit("k", 7) == 70


def test_an_answer_that_is_an_exception_fails_its_item_alone():
    def call(_key: object, items: list[int]) -> list[object]:
        return [ValueError(f"bad {i}") if i < 0 else i for i in items]

    batcher = MicroBatcher("t", call, window_s=HOUR)
    tickets = [batcher.expect() for _ in range(3)]
    answers = in_threads(
        *(
            lambda v=v, t=t: batcher.submit("k", v, expected=t)
            for v, t in zip((1, -1, 2), tickets, strict=True)
        )
    )
    assert answers[0] == 1 and answers[2] == 2
    assert isinstance(answers[1], ValueError)


def test_a_call_answering_the_wrong_number_fails_loudly():
    batcher = MicroBatcher("t", lambda _key, items: items[:-1], window_s=HOUR)
    with pytest.raises(RuntimeError, match="0 answers for 1 items"):
        batcher.submit("k", 1)


def test_isolated_reruns_a_failed_batch_item_by_item():
    def together(items: list[int]) -> list[int]:
        if any(i < 0 for i in items):
            raise ValueError("one bad item spoils the batch")
        return [i + 1 for i in items]

    def one(item: int) -> int:
        if item < 0:
            raise ValueError(f"bad {item}")
        return item + 1

    answers = isolated(together, one)([1, -5, 3])
    assert answers[0] == 2 and answers[2] == 4
    assert isinstance(answers[1], ValueError)
    assert isolated(together, one)([1, 2]) == [2, 3]


def test_arguments_are_checked():
    with pytest.raises(ValueError):
        MicroBatcher("t", Recorder(), window_s=-1)
    with pytest.raises(ValueError):
        MicroBatcher("t", Recorder(), window_s=0.001, max_size=0)
