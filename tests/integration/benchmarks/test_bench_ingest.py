"""``aether bench ingest`` at a tiny size with real components (the broker, ``aether worker``
processes, Redis/Feast): the scale-out phase runs the throughput events through two workers in
one consumer group and finds their state equal to the one-worker run's, and the floor phase runs
them through a worker that only counts; ``--pairs 2`` adds a second pair of fresh one- and
two-worker runs. Checks keys and the equality, never timings."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.ingest import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.solo]


def test_two_workers_reach_the_state_one_worker_reaches(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "ingest.json"
    argv = [str(Path(sys.executable).parent / "aether"), "bench", "ingest"]
    argv += ["--dataset", "ml-latest-small", "--limit", "2000", "--slate-every", "5"]
    argv += ["--rates", "0.5", "--seconds", "1", "--pairs", "2", "--json", str(out)]
    temp = tmp_path / "temp"
    temp.mkdir()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "REDIS_URL": redis_url,
        "TMPDIR": str(temp),
    }
    run = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=540)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert not list(temp.glob("aether-bench-ingest-*"))  # its work folder, removed on success
    figures = json.loads(out.read_text())
    assert figures["workers"] == 1 and figures["events"] == 2000 and figures["slates"] > 0
    assert figures["events_per_s_2workers"] > 0 and figures["worker_cpu_s_2workers"] > 0
    assert figures["scale_out_state_equal"] is True
    assert figures["scale_out_differing_outputs"] == []
    # The comparison covered every kind of output, not empty ones.
    assert figures["scale_out_user_rows"] > 1 and figures["scale_out_item_rows"] > 1
    assert figures["scale_out_transitions"] > 0 and figures["scale_out_posterior_entries"] > 0
    # The busier worker decided at least half of the events, at most all of them.
    assert 0.5 <= figures["scale_out_busiest_worker_share"] <= 1
    assert figures["batches_interactions_2workers"] > 0
    assert figures["stage_cpu_us_per_event_user_step_2workers"] > 0
    # A second pair of fresh runs (one worker, then two, state compared too), and the median.
    speedups = figures["scale_out_speedups"]
    assert len(speedups) == 2 and all(x > 0 for x in speedups)
    assert figures["scale_out_speedup_median"] == pytest.approx(statistics.median(speedups), 1e-3)
    assert figures["scale_out_speedups"][0] == pytest.approx(
        figures["events_per_s_2workers"] / figures["events_per_s"], rel=0.01
    )
    # Redis's CPU per event in both throughput runs; the broker's only when the benchmark
    # started it (here the test's broker was given).
    assert figures["redis_cpu_us_per_event"] > 0
    assert figures["redis_cpu_us_per_event_2workers"] > 0
    assert "broker_cpu_us_per_event" not in figures
    # Freshness at the one offered rate: open-loop probes, every one of them became visible.
    rate = figures["offered_rates"][0]
    assert figures[f"freshness_probes_at_{rate}"] > 1
    assert figures[f"freshness_lost_probes_at_{rate}"] == 0
    assert figures[f"late_events_at_{rate}"] == 0  # live traffic: nothing judged late
    assert figures[f"batches_interactions_at_{rate}"] > 0
    assert 0 < figures["freshness_p50_ms"] <= figures["freshness_p99_ms"]
    # Faust's floor on the same events, in the same run, and the full worker's share of it.
    floor = figures["faust_floor_events_per_worker_cpu_s"]
    assert floor > 0 and figures["faust_floor_events_per_s"] > 0
    assert figures["share_of_faust_floor"] == pytest.approx(
        figures["events_per_worker_cpu_s"] / floor, rel=0.01
    )
