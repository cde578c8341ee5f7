"""Keep Python's cyclic garbage collector off the long-lived start-up heap of a service.

A worker or server imports Feast, pandas, pyarrow, torch, gRPC and protobuf and builds its
stores before it handles the first message: millions of objects that live as long as the process.
The collector's full (generation 2) pass walks all of them, and it runs every few hundred
thousand allocations of request or event work. Measured in the stream worker under
``aether bench ingest`` (``docs/benchmarks/ingest.md``): 18–24 full passes of 240–470 ms each
(p50), every one a stall of the event loop, ≈ 5 s of a 15 s run.

``gc.freeze()`` moves everything alive at that moment into a permanent generation that the
collector never scans; objects created later are collected as usual, so nothing leaks.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> int:
    """Collect once, then exempt every surviving object from later passes; returns their count."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
