"""``aether bench ingest`` reads its figures from the workers' Prometheus text and the offline
logs' folders; no network here."""

from __future__ import annotations

from pathlib import Path

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
aether_stream_stage_cpu_seconds_total{stage="user_step"} 4.0
aether_stream_stage_cpu_seconds_total{stage="drift"} 1.5
""",
    2: """process_cpu_seconds_total 2.25
aether_stream_batch_seconds_count{agent="interactions"} 2.0
aether_stream_stage_cpu_seconds_total{stage="user_step"} 0.5
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


def test_stage_cpu_is_summed_over_workers_and_split_per_event_with_the_rest() -> None:
    after = bench_ingest.stage_cpu_seconds([1, 2, 3])
    assert after == {"user_step": 4.5, "drift": 1.5}
    split = bench_ingest.stage_split({"user_step": 0.5}, after, cpu_s=10.0, events=100_000)
    # µs per event: (4.5 − 0.5) s and 1.5 s over 100,000 events; the rest of the 10 s is Faust's
    assert split == pytest.approx({"drift": 15.0, "user_step": 40.0, "rest": 45.0})


def test_the_floor_worker_has_consumed_once_every_event_is_decided() -> None:
    ports = [1, 2, 3]
    assert bench_ingest.consumed(ports, "b.events", 1050)  # applied, late and dead letters
    assert not bench_ingest.consumed(ports, "b.events", 1051)


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


def test_offline_log_figures_count_live_files_bytes_and_batches(tmp_path: Path) -> None:
    from core.settings import Settings
    from events.models import Interaction
    from features.offline import FeatureHistory, OfflineEventLog
    from features.rows import ItemFeatureRow, UserFeatureRow

    settings = Settings(namespace="bench_figures", data_dir=tmp_path)
    log = OfflineEventLog(settings.deployment)
    for n in range(9):  # merged as they come: fewer files than batches
        log.append(
            [Interaction(event_id=f"e{n}", event_type="view", user_id="u", item_id="i",
                         event_time=1_700_000_000_000 + n)]
        )  # fmt: skip
    FeatureHistory(settings.deployment).append(
        [UserFeatureRow("u", 1_700_000_000_000, ("i",)), ItemFeatureRow("i", 1_700_000_000_000)]
    )
    figures = bench_ingest.offline_log_figures(settings)
    files = log.folder.glob("[0-9]*.parquet")
    assert figures["offline_log_batches"] == 9
    assert 1 <= figures["offline_log_files"] < 9
    assert figures["offline_log_bytes"] == sum(p.stat().st_size for p in files)
    assert (figures["feature_history_files"], figures["feature_history_batches"]) == (2, 2)
    assert (figures["offline_impressions_files"], figures["offline_impressions_bytes"]) == (0, 0)


def test_scale_out_comparison_names_every_differing_output() -> None:
    from stack.namespace_outputs import differing_outputs

    one = {"users": {"u": 1}, "transitions": {("a", "b"): 0.1 + 0.2}, "posteriors": {}}
    # Transition weights summed in another batch order move the last bits: still equal.
    two = {"users": {"u": 1}, "transitions": {("a", "b"): 0.3}, "posteriors": {}}
    assert differing_outputs(one, two) == []
    assert differing_outputs(one, {**two, "users": {"u": 2}}) == ["users"]
    assert differing_outputs(one, {**two, "transitions": {("a", "b"): 0.31}}) == ["transitions"]
    assert differing_outputs(one, {**two, "transitions": {}, "posteriors": {"*": {}}}) == [
        "posteriors",
        "transitions",
    ]


def test_a_capped_anchor_is_compared_by_its_total_and_every_other_by_its_neighbours() -> None:
    """An anchor at the store's cap keeps an order-dependent tail (``capped_anchors``): two runs
    may keep other neighbours there, but its total and every uncapped anchor must agree."""
    from features.transition_store import DEFAULT_MAX_NEIGHBOURS
    from stack.namespace_outputs import capped_anchors, differing_outputs

    full = {("hub", f"n{k}"): 1.0 for k in range(DEFAULT_MAX_NEIGHBOURS)}
    other_tail = {**full, ("hub", "late"): 1.0}
    del other_tail[("hub", "n0")]
    one = {"transitions": {**full, ("a", "b"): 1.0}, "transition_totals": {"hub": 300.0}}
    two = {"transitions": {**other_tail, ("a", "b"): 1.0}, "transition_totals": {"hub": 300.0}}
    assert capped_anchors(one["transitions"]) == {"hub"}
    assert differing_outputs(one, two) == []
    assert differing_outputs(one, {**two, "transition_totals": {"hub": 299.0}}) == [
        "transition_totals"
    ]
    moved = {**two["transitions"], ("a", "b"): 2.0}
    assert differing_outputs(one, {**two, "transitions": moved}) == ["transitions"]
    below = {pair: w for pair, w in full.items() if pair != ("hub", "n0")}
    assert not capped_anchors(below)  # one neighbour short of the cap: compared in full
    changed = {**below, ("hub", "n1"): 2.0}
    assert differing_outputs({"transitions": below}, {"transitions": changed}) == ["transitions"]


def test_serving_slates_show_each_nth_viewed_item_just_before_its_view() -> None:
    import orjson

    from benchmarks.ingest_scale_out import serving_slates
    from interactions.replay import ReplayMessage

    def event(n: int, kind: str, item: str) -> ReplayMessage:
        body = {"event_id": f"e{n}", "event_type": kind, "user_id": "7", "item_id": item}
        return ReplayMessage(b"7", orjson.dumps(body), 1_000 + n)

    messages = [event(0, "view", "5"), event(1, "click", "5"), event(2, "view", "1")]
    messages += [event(3, "view", "9")]
    assert serving_slates(messages, 0) == []
    slates = serving_slates(messages, 2)  # views 0 and 2 of the three
    bodies = [orjson.loads(s.value) for s in slates]
    assert [(s.key, s.event_time_ms) for s in slates] == [(b"7", 999), (b"7", 1_002)]
    assert [[i["item_id"] for i in b["items"]] for b in bodies] == [["5", "1"], ["9", "1"]]
    assert [b["event_time"] for b in bodies] == [999, 1_002]


def test_stage_cpu_counts_this_threads_cpu_in_the_block_for_known_stages_only() -> None:
    import time

    from streams.worker_metrics import STAGE_CPU, stage_cpu

    def counted() -> float:
        return STAGE_CPU.labels("drift")._value.get()

    before = counted()
    with stage_cpu("drift"):
        started = time.thread_time()
        while time.thread_time() - started < 0.02:  # CPU, not sleep: sleeping costs no CPU
            pass
    with stage_cpu("drift"):
        time.sleep(0.05)
    assert 0.02 <= counted() - before < 0.05
    with pytest.raises(ValueError, match="unknown stage"), stage_cpu("faust"):
        pass
