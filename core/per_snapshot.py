"""Values derived once per catalogue snapshot, for the few snapshots alive at a time.

Serving derives arrays from an immutable snapshot (a ``CatalogIndex``, its id list) on the
request path: the ranker's rows of the catalogue's items, the rules' row masks, MMR's unit
vectors. ``PerSnapshot`` computes each on its snapshot's first use and keeps it while the
snapshot is among the last few asked for; a catalogue refresh brings a new snapshot, so a
value is never stale. Keyed by identity (snapshots are not hashable by content, and two equal
ones would be a waste, not a mistake). Thread-safe enough: two threads meeting a new snapshot
both compute it, and one result stays.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class PerSnapshot(Generic[K, V]):
    """``derive(snapshot)``, computed once per snapshot, for at most ``keep`` of them."""

    def __init__(self, derive: Callable[[K], V], keep: int = 4) -> None:
        self._derive = derive
        self._keep = keep
        self._held: dict[int, tuple[K, V]] = {}

    def __call__(self, snapshot: K) -> V:
        held = self._held.get(id(snapshot))
        if held is not None and held[0] is snapshot:
            return held[1]
        value = self._derive(snapshot)
        if len(self._held) >= self._keep:  # refreshes swap snapshots: start afresh
            self._held.clear()
        self._held[id(snapshot)] = (snapshot, value)
        return value
