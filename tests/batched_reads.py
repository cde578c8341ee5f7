"""Reads made concurrently through serving's micro-batcher, for the tests of batched reads."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from serving.batching import MicroBatcher


def read_concurrently(
    stage: str,
    read_batch: Callable[[Any, list[Any]], Sequence[Any]],
    batch_reads: Callable[[Any], None],
    read: Callable[..., Any],
    arguments: Sequence[tuple[Any, ...]],
) -> tuple[list[Any], list[int]]:
    """``read(*a)`` for each ``a`` of ``arguments``, each on its own thread, while
    ``batch_reads`` sends the reads to a ``MicroBatcher`` over ``read_batch`` whose first reader
    waits for the others (a request counted as on its way, a 2 s window). Returns the answers in
    order and the size of each batch call."""
    calls: list[int] = []

    def counted(key: Any, batch: list[Any]) -> Sequence[Any]:
        calls.append(len(batch))
        return read_batch(key, batch)

    batcher = MicroBatcher(stage, counted, window_s=2.0)
    batch_reads(batcher.submit)
    on_the_way = batcher.expect()
    got: dict[int, Any] = {}
    start = threading.Barrier(len(arguments))

    def ask(n: int) -> None:
        start.wait()
        got[n] = read(*arguments[n])

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(len(arguments))]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        on_the_way.done()
        batch_reads(None)
    return [got[n] for n in range(len(arguments))], calls
