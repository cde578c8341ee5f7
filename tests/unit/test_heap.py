"""``core.heap.freeze_startup_heap``: the start-up heap leaves the collector, nothing leaks."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from core.heap import freeze_startup_heap


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
