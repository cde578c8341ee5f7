"""``core.heap``: the start-up heap leaves the collector, the young generation is collected less
often, nothing leaks."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from core.heap import YOUNG_THRESHOLD, collect_young_less_often, freeze_startup_heap


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def unfreeze_after() -> Iterator[None]:
    yield
    gc.unfreeze()  # give the rest of the test session its normal collector back


@pytest.mark.usefixtures("unfreeze_after")
def test_objects_alive_at_start_up_are_no_longer_scanned() -> None:
    survivor = [Node()]  # a container the collector tracks
    frozen = freeze_startup_heap()
    # frozen objects can still die (other threads drop references), never join after the call
    assert frozen > 0 and 0 < gc.get_freeze_count() <= frozen
    assert all(o is not survivor for o in gc.get_objects())  # not in any scanned generation
    assert survivor[0].other is None  # and of course still alive


@pytest.mark.usefixtures("unfreeze_after")
def test_cycles_created_after_the_freeze_are_still_collected() -> None:
    freeze_startup_heap()
    a, b = Node(), Node()
    a.other, b.other = b, a  # a reference cycle: only the cyclic collector can free it
    probe = weakref.ref(a)
    del a, b
    gc.collect()
    assert probe() is None


def test_a_worker_collects_its_young_generation_less_often_and_still_frees_cycles() -> None:
    previous = collect_young_less_often()
    try:
        assert gc.get_threshold()[0] == YOUNG_THRESHOLD > previous[0]
        a, b = Node(), Node()
        a.other, b.other = b, a
        probe = weakref.ref(a)
        del a, b
        assert probe() is not None  # only the collector frees a cycle
        alive = [Node() for _ in range(2 * YOUNG_THRESHOLD)]  # net allocations trigger it
        assert probe() is None and len(alive) == 2 * YOUNG_THRESHOLD
    finally:
        gc.set_threshold(*previous)
