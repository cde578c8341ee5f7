"""Keep Python's cyclic garbage collector off the long-lived start-up heap of a service.

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
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> int:
    """Collect once, then exempt every surviving object from later passes; returns their count."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
