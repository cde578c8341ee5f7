"""``streams.eager``: the consumer's per-message race, without tasks when delivery never waits.

The race is ``mode``'s own ``Service.wait_first`` in every test, raced the way Faust's drain loop
calls it: ``wait_first(deliver(message), suspend_flow.wait())``.
"""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

import pytest
from mode import Service
from mode.utils.locks import Event

from streams.eager import EagerWaitFirst


class Consumer(EagerWaitFirst, Service):
    pass


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_a_delivery_that_never_waits_makes_no_task_and_closes_the_flow_wait() -> None:
    async def main() -> tuple[Any, int]:
        consumer, suspend = Consumer(), Event()
        deliveries: list[str] = []

        async def deliver(message: str) -> str:
            deliveries.append(message)
            return message

        before = len(asyncio.all_tasks())
        flow_wait = suspend.wait()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a never-awaited flow wait would warn
            result = await consumer.wait_first(deliver("m1"), flow_wait)
        assert deliveries == ["m1"]
        assert flow_wait.cr_frame is None  # closed unstarted
        return result, len(asyncio.all_tasks()) - before

    result, new_tasks = run(main())
    assert new_tasks == 0
    assert result.results == ["m1"] and not result.stopped


def test_a_delivery_that_waits_is_raced_and_resumes_where_it_stopped() -> None:
    async def main() -> Any:
        consumer, suspend = Consumer(), Event()
        room = asyncio.get_running_loop().create_future()
        steps: list[str] = []

        async def deliver() -> int:
            steps.append("before")
            extra = await room  # the stream queue is full until the agent takes a batch
            steps.append("after")
            return 1 + extra

        racing = asyncio.ensure_future(consumer.wait_first(deliver(), suspend.wait()))
        await asyncio.sleep(0.01)
        assert steps == ["before"] and not racing.done()
        room.set_result(41)
        result = await racing
        assert steps == ["before", "after"]
        return result

    result = run(main())
    assert result.results == [42] and not result.stopped


def test_a_waiting_delivery_is_abandoned_when_the_flow_is_suspended() -> None:
    async def main() -> list[str]:
        consumer, suspend = Consumer(), Event()
        never = asyncio.get_running_loop().create_future()
        steps: list[str] = []

        async def deliver() -> None:
            try:
                await never
                steps.append("delivered")
            except asyncio.CancelledError:
                steps.append("cancelled")
                raise

        racing = asyncio.ensure_future(consumer.wait_first(deliver(), suspend.wait()))
        await asyncio.sleep(0.01)
        suspend.set()  # a rebalance: Faust's consumer stops the flow
        await asyncio.wait_for(racing, 1.0)
        await asyncio.sleep(0.01)  # the loser's cancellation runs
        return steps

    assert run(main()) == ["cancelled"]


def test_errors_propagate_whether_raised_before_or_after_waiting() -> None:
    async def fails_at_once() -> None:
        raise ValueError("at once")

    async def fails_later() -> None:
        await asyncio.sleep(0)
        raise ValueError("later")

    async def main(deliver: Any) -> None:
        await Consumer().wait_first(deliver(), Event().wait())

    with pytest.raises(ValueError, match="at once"):
        run(main(fails_at_once))
    with pytest.raises(ValueError, match="later"):
        run(main(fails_later))


def test_a_stopped_service_answers_stopped_as_mode_does() -> None:
    async def main() -> Any:
        consumer = Consumer()
        consumer._stopped.set()

        async def deliver() -> str:
            return "m1"

        return await consumer.wait_first(deliver(), Event().wait())

    assert run(main()).stopped
