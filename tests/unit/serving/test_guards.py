from __future__ import annotations

import pytest

from core.errors import DependencyUnavailable
from retrieval.sources import Candidate, RetrievalRequest
from serving.breaker import CircuitBreaker
from serving.guards import GuardedSource, guarded


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_failures_open_the_breaker_and_then_calls_fail_fast():
    breaker = CircuitBreaker("dep", failure_threshold=2, cooldown_s=10)
    calls = []

    def down():
        calls.append(1)
        raise ConnectionError("refused")

    for _ in range(2):
        with pytest.raises(ConnectionError):
            guarded(breaker, down, slow_s=1.0)
    with pytest.raises(DependencyUnavailable, match="circuit open"):
        guarded(breaker, down, slow_s=1.0)
    assert len(calls) == 2  # the open breaker never called the dependency


def test_a_slow_answer_counts_as_a_failure(monkeypatch):
    clock = Clock()
    monkeypatch.setattr("serving.guards.time.monotonic", clock)
    breaker = CircuitBreaker("dep", failure_threshold=1, cooldown_s=10, clock=clock)

    def slow():
        clock.now += 0.5
        return "late"

    assert guarded(breaker, slow, slow_s=0.1) == "late"  # the answer is still used
    assert breaker.state == "open"


def test_guarded_source_keeps_the_source_interface():
    class Source:
        name = "ann"

        def candidates(self, request):
            return [Candidate("x", 1.0, "ann")]

    source = GuardedSource(Source(), CircuitBreaker("ann"), slow_s=1.0)
    assert source.name == "ann"
    assert source.candidates(RetrievalRequest(k=1)) == [Candidate("x", 1.0, "ann")]
