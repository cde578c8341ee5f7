"""Circuit breaker state machine, driven by a fake clock (no sleeps)."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import DependencyUnavailable, SchemaError
from serving.breaker import CircuitBreaker


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def failing() -> str:
    raise ConnectionError("refused")


def make(**kwargs) -> tuple[CircuitBreaker, FakeClock, list[tuple[str, str]]]:
    clock = FakeClock()
    changes: list[tuple[str, str]] = []
    breaker = CircuitBreaker(
        "redis",
        clock=clock,
        on_state_change=lambda _name, old, new: changes.append((old, new)),
        **{"failure_threshold": 3, "cooldown_s": 10.0, **kwargs},
    )
    return breaker, clock, changes


def test_opens_after_consecutive_failures_and_then_rejects_without_calling():
    breaker, _, changes = make()
    for _ in range(3):
        assert breaker.call(failing, fallback=lambda: "fallback") == "fallback"
    assert breaker.state == "open" and changes == [("closed", "open")]
    calls = []
    assert (
        breaker.call(lambda: calls.append(1) or "live", fallback=lambda: "fallback") == "fallback"
    )
    assert calls == []  # the dependency was not touched
    stats = breaker.stats()
    assert (stats.failures_total, stats.rejected_total, stats.opened_total) == (3, 1, 1)
    assert stats.state_code == 2


def test_a_success_resets_the_consecutive_count():
    breaker, _, _ = make()
    for _ in range(2):
        breaker.call(failing, fallback=lambda: None)
    breaker.call(lambda: "ok")
    for _ in range(2):
        breaker.call(failing, fallback=lambda: None)
    assert breaker.state == "closed"


def test_half_open_lets_exactly_one_trial_through_and_closes_on_success():
    breaker, clock, changes = make()
    for _ in range(3):
        breaker.record_failure()
    clock.now += 9.9
    assert breaker.state == "open"
    clock.now += 0.1
    assert breaker.state == "half_open"
    assert breaker.allow() is True  # the trial
    assert breaker.allow() is False  # everyone else waits for it
    breaker.record_success()
    assert breaker.state == "closed"
    assert changes == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


def test_a_failed_trial_reopens_for_a_new_cooldown():
    breaker, clock, _ = make()
    for _ in range(3):
        breaker.record_failure()
    clock.now += 10
    assert breaker.call(failing, fallback=lambda: "fallback") == "fallback"
    assert breaker.state == "open"
    clock.now += 5
    assert breaker.state == "open"
    clock.now += 5
    assert breaker.state == "half_open"
    assert breaker.stats().opened_total == 2


def test_a_trial_that_never_reports_is_given_up_after_a_cooldown():
    breaker, clock, _ = make()
    for _ in range(3):
        breaker.record_failure()
    clock.now += 10
    assert breaker.allow() is True  # the caller forgets to record anything
    assert breaker.allow() is False
    clock.now += 10
    assert breaker.allow() is True


def test_failure_rate_opens_even_without_a_long_run_of_failures():
    breaker, _, _ = make(failure_threshold=100, failure_rate=0.5, window=10, min_calls=10)
    for n in range(9):
        (breaker.record_failure if n % 2 else breaker.record_success)()
    assert breaker.state == "closed"  # 4 of 9: below min_calls anyway
    breaker.record_failure()  # 5 of 10
    assert breaker.state == "open"


def test_without_fallback_rejections_raise_dependency_unavailable_and_failures_reraise():
    breaker, _, _ = make(failure_threshold=1)
    with pytest.raises(ConnectionError):
        breaker.call(failing)
    with pytest.raises(DependencyUnavailable, match="redis unavailable: circuit open"):
        breaker.call(lambda: "never")


def test_uncounted_exceptions_pass_through_without_tripping():
    breaker, _, _ = make(failure_threshold=1, counted=(ConnectionError,))

    def bad_request() -> str:
        raise SchemaError("bad key", reason="invalid_argument")

    with pytest.raises(SchemaError):
        breaker.call(bad_request, fallback=lambda: "fallback")
    assert breaker.state == "closed"


def test_invalid_settings_are_rejected():
    for kwargs in (
        {"failure_threshold": 0},
        {"failure_rate": 1.5},
        {"min_calls": 99, "window": 10},
    ):
        with pytest.raises(ValueError):
            CircuitBreaker("x", **kwargs)


def test_concurrent_use_keeps_the_counters_consistent():
    breaker = CircuitBreaker("milvus", failure_threshold=10**9)
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        for n in range(500):
            breaker.call(failing if n % 2 else (lambda: "ok"), fallback=lambda: "fallback")

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = breaker.stats()
    assert (stats.successes_total, stats.failures_total) == (2000, 2000)


@settings(max_examples=80, deadline=None)
@given(
    steps=st.lists(
        st.one_of(st.sampled_from(["ok", "fail", "allow"]), st.floats(0.0, 30.0)), max_size=40
    )
)
def test_the_state_machine_never_lets_calls_through_while_open(steps):
    breaker, clock, changes = make()
    for step in steps:
        if isinstance(step, float):
            clock.now += step
        elif step == "allow":
            state = breaker.state
            allowed = breaker.allow()
            if state == "open":
                assert not allowed
            if state == "closed":
                assert allowed
        elif step == "ok":
            breaker.record_success()
        else:
            breaker.record_failure()
    for old, new in changes:  # only the documented transitions
        assert (old, new) in {
            ("closed", "open"),
            ("open", "half_open"),
            ("half_open", "closed"),
            ("half_open", "open"),
        }


def test_the_docstring_examples_run():
    import doctest

    import serving.breaker

    result = doctest.testmod(serving.breaker)
    assert result.attempted > 0 and result.failed == 0
