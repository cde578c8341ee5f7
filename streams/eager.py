"""Race a coroutine against others without a task per call when it finishes at once.

Faust's consumer hands every fetched message to the streams with
``await self.wait_first(deliver(message), self.suspend_flow.wait())``: deliver, unless the flow is
suspended (a rebalance) while the delivery waits. ``mode``'s ``Service.wait_first`` makes four
tasks for that (the two coroutines and the service's ``stopped`` and ``crashed`` events),
``asyncio.wait``s them and cancels the losers: about 40 µs of CPU per message on the benchmark
machine, a third of what Faust itself spent per message there (``docs/benchmarks/ingest.md``).

Almost every delivery finishes without waiting (it puts the event on a stream queue that has
room), and a coroutine that never waits cannot lose a race. :class:`EagerWaitFirst` (mixed into the
worker's consumer, ``streams.app``) therefore runs the first coroutine up to its first wait, as
asyncio's eager tasks (Python 3.12) do; only one that does wait is handed, from where it stopped,
to the full race. Either way the outcome is the race's: a delivery that waits is still abandoned
when the flow is suspended meanwhile.
"""

from __future__ import annotations

import types
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, cast

from mode import Service
from mode.services import WaitResults


class EagerWaitFirst(Service):
    """``Service.wait_first`` that starts its first coroutine eagerly (:func:`first_eagerly`)."""

    async def wait_first(self, *coros: Any, timeout: Any = None) -> WaitResults:
        if timeout is not None or not coros or not isinstance(coros[0], types.CoroutineType):
            return await super().wait_first(*coros, timeout=timeout)
        return cast(
            WaitResults,
            await first_eagerly(coros[0], coros[1:], super().wait_first, self._won_by),
        )

    def _won_by(self, first: Any, result: Any) -> WaitResults:
        if self._stopped.is_set() or self._crashed.is_set():  # as ``wait_first`` answers then
            return WaitResults([], [], True)
        return WaitResults([first], [result], False)


async def first_eagerly(
    first: Coroutine[Any, Any, Any],
    others: tuple[Any, ...],
    race: Callable[..., Awaitable[Any]],
    finished: Callable[[Any, Any], Any],
) -> Any:
    """``race(first, *others)``, except when ``first`` finishes without waiting.

    Then the others are closed unstarted and ``finished(first, result)`` is returned. An exception
    ``first`` raises before waiting propagates, as ``race`` would propagate it.
    """
    try:
        awaiting = first.send(None)
    except StopIteration as stop:
        _close(others)
        return finished(first, stop.value)
    except BaseException:
        _close(others)
        raise
    return await race(_go_on(first, awaiting), *others)


async def _go_on(coro: Coroutine[Any, Any, Any], awaiting: Any) -> Any:
    try:
        return await _resume(coro, awaiting)
    finally:
        coro.close()  # a no-op once it has finished; cleans up a delivery cancelled before this ran


@types.coroutine
def _resume(coro: Coroutine[Any, Any, Any], awaiting: Any) -> Generator[Any, Any, Any]:
    """Go on running ``coro``, which stopped at awaiting ``awaiting`` (what it yielded).

    ``yield from coro`` would resume it at once, before ``awaiting`` is done; this yields
    ``awaiting`` to the task first and then relays results and exceptions (cancellation
    included) both ways, as ``yield from`` does.
    """
    while True:
        try:
            try:
                value = yield awaiting
            except BaseException as exc:  # CancelledError, GeneratorExit, … go to the coroutine
                awaiting = coro.throw(exc)
            else:
                awaiting = coro.send(value)
        except StopIteration as stop:
            return stop.value


def _close(awaitables: tuple[Any, ...]) -> None:
    for awaitable in awaitables:
        if isinstance(awaitable, types.CoroutineType):  # not the ABC: this runs per message
            awaitable.close()  # never started: no "never awaited" warning
