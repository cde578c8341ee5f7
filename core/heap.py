"""Keep Python's cyclic garbage collector off the long-lived start-up heap of a service, and
collect the young generation of a stream worker less often.

A worker or server imports Feast, pandas, pyarrow, torch, gRPC and protobuf and builds its
stores before it handles the first message: objects that live as long as the process. Each full
(generation 2) pass of the collector walks all of them; it runs whenever the long-lived objects
have grown by a quarter since the last one, which a busy stream worker reaches often and a server
more rarely. What the freeze saves is measured by ``aether bench ingest`` (its ``gc_full_*``
figures; see ``docs/benchmarks/ingest.md``).

``gc.freeze()`` moves everything alive at that moment into a permanent generation that the
collector never scans; objects created later are collected as usual. Only objects alive at the
freeze that later become part of a garbage cycle are never reclaimed, which for start-up state
(modules, models, clients) does not happen in practice.

**A stream worker's young generation** (:func:`collect_young_less_often`). CPython collects the
youngest generation after every 700 net allocations of tracked objects, and promotes what is
alive then. A worker batch keeps thousands of fresh objects alive while it is handled (the
batch's records and decoded events, Faust's queue of fetched events), so at 700 most of what a
collection scans survives it, is promoted, and is scanned again by the middle generation's
collections. Collecting after 20,000 lets most of a batch's objects die first (reference
counting frees them, not the collector): 2–11 % more events per worker CPU second in two
alternating pairs of ``aether bench ingest`` runs (docs/benchmarks/ingest.md, session 23).
Garbage cycles are still collected, only later; memory held by them grows by at most that many
objects.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> int:
    """Collect once, then exempt every surviving object from later passes; returns their count."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


YOUNG_THRESHOLD = 20_000  # net allocations between collections of the youngest generation
MIDDLE_THRESHOLD = 20  # young collections between collections of the middle one
OLD_THRESHOLD = 10  # middle collections before a full one is considered


def collect_young_less_often() -> tuple[int, int, int]:
    """The stream worker's collector thresholds (module doc); returns the previous ones."""
    previous = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_THRESHOLD, OLD_THRESHOLD)
    return previous
