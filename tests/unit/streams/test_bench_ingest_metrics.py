"""``aether bench ingest`` reads its figures from the workers' Prometheus text; no network here."""

from __future__ import annotations

import pytest

from benchmarks import ingest as bench_ingest

WORKER = {
    1: """# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
process_cpu_seconds_total 12.5
aether_stream_batch_seconds_count{agent="interactions"} 40.0
aether_stream_batch_seconds_count{agent="item_features"} 12.0
aether_stream_events_total{outcome="applied",topic="b.events"} 900.0
aether_stream_events_total{outcome="duplicate",topic="b.events"} 100.0
aether_stream_events_total{outcome="applied",topic="b.item-updates"} 850.0
""",
    2: """process_cpu_seconds_total 2.25
aether_stream_batch_seconds_count{agent="interactions"} 2.0
aether_stream_events_total{outcome="applied",topic="b.events"} 50.0
""",
    3: "",  # not serving yet
}


@pytest.fixture(autouse=True)
def fake_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_ingest, "_scrape", WORKER.__getitem__)


def test_worker_cpu_and_batches_are_summed_over_workers() -> None:
    cpu, batches = bench_ingest.worker_usage([1, 2, 3])
    assert cpu == pytest.approx(14.75)
    assert batches == {"interactions": 42, "item_features": 12}


def test_settled_waits_for_the_item_side_unless_there_is_none() -> None:
    ports = [1, 2, 3]
    assert bench_ingest.settled(ports, "b.events", None, 1050)  # the floor worker: events only
    assert not bench_ingest.settled(ports, "b.events", None, 1051)
    # 950 applied events, 850 applied item updates: the item side is behind
    assert not bench_ingest.settled(ports, "b.events", "b.item-updates", 1050)


def test_collector_passes_are_timed_by_generation() -> None:
    import gc

    from streams.worker_metrics import GC_PAUSES, observe_gc_pauses

    def full_passes() -> float:
        samples = [s for m in GC_PAUSES.collect() for s in m.samples]
        return sum(
            s.value
            for s in samples
            if s.name.endswith("_count") and s.labels.get("generation") == "2"
        )

    observe_gc_pauses()
    observe_gc_pauses()  # idempotent: one callback
    before = full_passes()
    gc.collect()
    assert full_passes() == before + 1
