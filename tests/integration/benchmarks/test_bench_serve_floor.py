"""``aether bench serve``'s load generator, h2load, against the floor server (a real gRPC server
child answering a constant 10-item response; no stores): every call h2load sent was answered OK
by the server, the sampled client's answers were checked, and the counts agree. Checks counts,
never timings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.serve_floor import floor_slate, start_floor
from benchmarks.serve_h2load import grpc_frame, h2load_with_sample, request_body
from benchmarks.serve_measure import FLOOR, h2load_rate_figures
from benchmarks.serve_server import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.solo]


@pytest.mark.parametrize("variant", ["bare", "aio"])
def test_h2load_calls_are_answered_ok_and_counted_alike_by_h2load_and_server(
    variant: str, h2load: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As a test process that imported Feast leaves it: the floor server child must still start
    # with prometheus_client in its ordinary mode (it failed to start in a full suite run).
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    from serving.servicer import slate_to_proto

    server = start_floor(variant, tmp_path / "floor.log")
    try:
        bodies = [request_body(f"user-{n}", 10) for n in range(4)]
        before, cpu_before = server.metrics(), server.cpu_seconds()
        measured = h2load_with_sample(
            server.address,
            bodies,
            [f"sampled-{n}" for n in range(6)],
            rate=20,
            seconds=2.0,
            work=tmp_path / "load",
            sample_rps=3.0,
        )
        cpu_after, after = server.cpu_seconds(), server.metrics()
    finally:
        server.stop()

    load, sampled = measured.load, measured.sampled
    assert load.requests == 40 and len(load.plans) == 4
    assert load.succeeded == 40 and load.failed == 0, server.log_tail()
    assert len(load.rows) == 40 and {r.status for r in load.rows} == {200}
    # One evenly spaced schedule: the processes' sends interleave, one per turn, and each
    # request's lag behind its turn is measured.
    assert len(load.send_lags_ms) == 40
    by_process = sorted((t, i) for i, p in enumerate(load.plans) for t in p.offsets_s)
    assert [i for _, i in by_process] == [n % 4 for n in range(40)]
    # Every HTTP answer carried the whole constant response (a refused call has no body).
    response = grpc_frame(slate_to_proto(floor_slate()).SerializeToString())
    assert sum(s.data_bytes for s in load.summaries) == 40 * len(response)
    # The sampled client's calls were answered OK with a full slate.
    assert dict(sampled.codes) == {"OK": 6} and sampled.empty_slates == 0
    assert sampled.short_slates == 0 and dict(sampled.model_versions) == {"floor": 6}
    # The server answered exactly h2load's and the sampled client's calls.
    answered = after[FLOOR.answered] - before.get(FLOOR.answered, 0.0)
    assert answered == load.requests + sampled.sent
    cpu = (cpu_after[0] - cpu_before[0], cpu_after[1] - cpu_before[1])
    figures = h2load_rate_figures(20, measured, before, after, cpu, FLOOR)
    assert figures["grpc_ok_at_20rps"] == figures["h2load_answered_at_20rps"] == 40
    assert figures["errors_at_20rps"] == 0 and figures["sampled_errors_at_20rps"] == 0
    assert figures["server_cpu_ms_per_request_at_20rps"] > 0
    assert figures["p50_ms_at_20rps"] <= figures["p99_ms_at_20rps"]


def test_bench_serve_floor_command_writes_consistent_flat_figures(
    h2load: str, tmp_path: Path
) -> None:
    out = tmp_path / "floor.json"
    argv = [str(Path(sys.executable).parent / "aether"), "bench", "serve", "--floor", "servicer"]
    argv += ["--rates", "10,20", "--seconds", "1.5", "--warmup-seconds", "0.5"]
    argv += ["--h2load-bodies", "3", "--sample-rps", "2", "--json", str(out)]
    run = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["floor"] == "servicer" and figures["load_generator"] == "h2load"
    assert figures["offered_rates"] == [10, 20] and figures["h2load_bodies"] == 3
    assert figures["h2load_connections"] == 3 and figures["sample_rps"] == 2
    assert all(not isinstance(v, (dict, list)) for k, v in figures.items() if k != "offered_rates")
    for rate, requests in ((10, 15), (20, 30)):
        s = f"_at_{rate}rps"
        assert figures[f"requests{s}"] == requests
        assert figures[f"grpc_ok{s}"] == figures[f"h2load_answered{s}"] == requests
        assert figures[f"errors{s}"] == 0 and figures[f"h2load_failed{s}"] == 0
        assert figures[f"sampled_requests{s}"] == 3 and figures[f"sampled_errors{s}"] == 0
        assert figures[f"server_cpu_ms_per_request{s}"] > 0
    assert figures["serving_max_workers"] >= 1
