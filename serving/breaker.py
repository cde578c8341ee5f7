"""A small thread-safe circuit breaker, so that a dead dependency costs no latency. Pure.

States::

    closed ──(N consecutive failures, or failure rate ≥ r over the last W calls)──► open
    open ──(cooldown elapsed)──► half_open ──(the one trial succeeds)──► closed
                                     └────────(the trial fails)──────────► open (new cooldown)

While open, calls are rejected at once (the caller serves its fallback). Half-open lets exactly
one trial call through; others are rejected until it reports. A trial that never reports (the
caller forgot, or crashed) is given up after another cooldown, so the breaker cannot stick.

The clock is injectable (``clock=`` returning seconds, monotonic), so tests need no sleeps.
The breaker does not time calls out: give the wrapped client its own deadline.

Example::

    >>> now = [0.0]
    >>> breaker = CircuitBreaker("milvus", failure_threshold=2, cooldown_s=5, clock=lambda: now[0])
    >>> def down() -> list[str]:
    ...     raise ConnectionError("refused")
    >>> [breaker.call(down, fallback=lambda: ["popular"]) for _ in range(2)]
    [['popular'], ['popular']]
    >>> breaker.state
    'open'
    >>> now[0] = 5.0
    >>> breaker.call(lambda: ["ann"], fallback=lambda: ["popular"]), breaker.state
    (['ann'], 'closed')
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

from core.errors import DependencyUnavailable

T = TypeVar("T")
State = Literal["closed", "open", "half_open"]
STATE_CODES: dict[State, int] = {"closed": 0, "half_open": 1, "open": 2}  # for a Prometheus gauge


@dataclass(frozen=True, slots=True)
class BreakerStats:
    """A snapshot for metrics: the state and monotonically increasing counters."""

    name: str
    state: State
    state_code: int
    successes_total: int
    failures_total: int
    rejected_total: int
    opened_total: int
    consecutive_failures: int


class CircuitBreaker:
    """Wraps calls to one dependency; see the module docstring.

    ``failure_rate`` (optional) opens the breaker when at least ``min_calls`` of the last
    ``window`` outcomes are recorded and the failed share reaches it. ``counted`` are the
    exception types that count as the dependency failing; others (e.g. a caller's bad input)
    pass through and count as a success, since the dependency did answer.
    ``on_state_change(name, old, new)`` runs under the breaker's lock: keep it quick (a log line,
    a gauge).
    """

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        cooldown_s: float = 5.0,
        failure_rate: float | None = None,
        window: int = 50,
        min_calls: int = 20,
        counted: tuple[type[BaseException], ...] = (Exception,),
        clock: Callable[[], float] = time.monotonic,
        on_state_change: Callable[[str, State, State], None] | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        if cooldown_s < 0:
            raise ValueError("cooldown_s must be >= 0")
        if failure_rate is not None and not 0.0 < failure_rate <= 1.0:
            raise ValueError("failure_rate must be in (0, 1]")
        if not 1 <= min_calls <= window:
            raise ValueError("need 1 <= min_calls <= window")
        self.name = name
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self.failure_rate = failure_rate
        self.min_calls = min_calls
        self.counted = counted
        self._clock = clock
        self._on_state_change = on_state_change
        self._lock = threading.Lock()
        self._state: State = "closed"
        self._opened_at = 0.0
        self._trial_started: float | None = None
        self._outcomes: deque[bool] = deque(maxlen=window)  # True = failure
        self._consecutive_failures = 0
        self._successes = self._failures = self._rejected = self._opened = 0

    @property
    def state(self) -> State:
        with self._lock:
            self._advance()
            return self._state

    def allow(self) -> bool:
        """Whether a call may go to the dependency now; a False is counted as a rejection.

        A True in half-open makes this caller the trial: it must call ``record_success`` or
        ``record_failure``.
        """
        with self._lock:
            self._advance()
            if self._state == "closed":
                return True
            if self._state == "half_open" and self._trial_started is None:
                self._trial_started = self._clock()
                return True
            self._rejected += 1
            return False

    def record_success(self) -> None:
        with self._lock:
            self._successes += 1
            self._consecutive_failures = 0
            self._outcomes.append(False)
            if self._state == "half_open":
                self._outcomes.clear()  # a fresh start: old failures must not re-open it
                self._set_state("closed")

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            self._consecutive_failures += 1
            self._outcomes.append(True)
            if self._state == "half_open" or self._should_open():
                self._open()

    def call(self, fn: Callable[[], T], fallback: Callable[[], T] | None = None) -> T:
        """``fn()`` through the breaker; ``fallback()`` when rejected or when ``fn`` fails.

        Without a fallback, a rejection raises ``DependencyUnavailable`` and a failure re-raises.
        """
        if not self.allow():
            if fallback is None:
                raise DependencyUnavailable(self.name, "circuit open")
            return fallback()
        try:
            result = fn()
        except self.counted:
            self.record_failure()
            if fallback is None:
                raise
            return fallback()
        except Exception:
            self.record_success()  # not the dependency's fault (see ``counted``)
            raise
        self.record_success()
        return result

    def stats(self) -> BreakerStats:
        with self._lock:
            self._advance()
            return BreakerStats(
                name=self.name,
                state=self._state,
                state_code=STATE_CODES[self._state],
                successes_total=self._successes,
                failures_total=self._failures,
                rejected_total=self._rejected,
                opened_total=self._opened,
                consecutive_failures=self._consecutive_failures,
            )

    # -- internals; callers hold the lock -------------------------------------------------------

    def _advance(self) -> None:
        """Time-driven transitions: open → half-open, and giving up on a silent trial."""
        now = self._clock()
        if self._state == "open" and now - self._opened_at >= self.cooldown_s:
            self._trial_started = None
            self._set_state("half_open")
        elif (
            self._state == "half_open"
            and self._trial_started is not None
            and now - self._trial_started >= self.cooldown_s
        ):
            self._trial_started = None  # the trial never reported: let another one through

    def _should_open(self) -> bool:
        if self._state != "closed":
            return False
        if self._consecutive_failures >= self.failure_threshold:
            return True
        if self.failure_rate is None or len(self._outcomes) < self.min_calls:
            return False
        return sum(self._outcomes) / len(self._outcomes) >= self.failure_rate

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._trial_started = None
        self._opened += 1
        self._set_state("open")

    def _set_state(self, new: State) -> None:
        old, self._state = self._state, new
        if old != new and self._on_state_change is not None:
            self._on_state_change(self.name, old, new)
