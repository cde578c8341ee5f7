"""Smoke test of ``aether bench serve``'s machinery on a tiny catalogue: stores prepared on real
Redis/Feast and Milvus Lite, the server child process over real gRPC, one short open-loop rate of
the Python client, and one of h2load with the sampled client."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.serve_h2load import body_users, h2load_with_sample, request_body
from benchmarks.serve_load import offered_load, request_users
from benchmarks.serve_measure import PIPELINE, h2load_rate_figures, rate_figures
from benchmarks.serve_server import ServerProcess
from benchmarks.serve_stores import Prepared
from core.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.solo]


def test_open_loop_load_against_the_server_process(
    settings: Settings, tiny_stores: Prepared, tmp_path: Path
) -> None:
    prepared = tiny_stores
    assert len(prepared.item_ids) == 60 and len(prepared.user_ids) == 30

    server = ServerProcess.start(settings, None, tmp_path / "server.log")
    try:
        users = request_users(prepared.user_ids, 20, unknown_share=0.25, seed=1)
        before = server.metrics()
        load = offered_load(server.address, users, rate=40, k=5)
        after = server.metrics()
    finally:
        server.stop()

    assert any(u.startswith("bench-new-") for u in users) and set(users) & set(prepared.user_ids)
    assert dict(load.codes) == {"OK": 20}, server.log_tail()
    assert len(load.latencies_ms) == 20 and load.short_slates == 0
    assert dict(load.model_versions) == {"retrieval-only": 20}  # no ranker given
    figures = rate_figures(40, load, before, after, server_cpu_s=(0.0, 0.0))
    assert figures["errors_at_40rps"] == 0
    ok = 'aether_recommend_requests_total{status="OK"}'
    assert after[ok] - before.get(ok, 0.0) == 20
    # Per-stage figures come from the pipeline's own stage observer: every stage of every
    # request, each source too; stages run inside the pipeline's time.
    stages = ["features", "user_vector", "retrieval", "ranking", "rerank", "explore"]
    stages += ["explanation", "impression", "source_ann", "source_cooccurrence", "pipeline"]
    for stage in stages:
        assert figures[f"cpu_ms_{stage}_at_40rps"] >= 0, stage
        assert figures[f"wall_ms_{stage}_at_40rps"] > 0, stage
    assert figures["wall_ms_pipeline_at_40rps"] >= figures["wall_ms_retrieval_at_40rps"]
    key = 'aether_recommend_stage_seconds_count{stage="features"}'
    assert after[key] - before.get(key, 0.0) == 20


def test_h2load_against_the_pipeline_every_call_answered_ok_and_checked(
    settings: Settings, tiny_stores: Prepared, tmp_path: Path, h2load: str
) -> None:
    users = body_users(tiny_stores.user_ids, 3, unknown_share=0.34, seed=2)
    assert sum(u.startswith("bench-new-") for u in users) == 1
    server = ServerProcess.start(settings, None, tmp_path / "server.log")
    try:
        before, cpu_before = server.metrics(), server.cpu_seconds()
        measured = h2load_with_sample(
            server.address,
            [request_body(user, 5) for user in users],
            request_users(tiny_stores.user_ids, 4, unknown_share=0.25, seed=5),
            rate=12,
            seconds=2.0,
            work=tmp_path / "load",
            k=5,
            sample_rps=2.0,
        )
        cpu_after, after = server.cpu_seconds(), server.metrics()
    finally:
        server.stop()

    load, sampled = measured.load, measured.sampled
    assert load.requests == 24 and load.succeeded == 24 and load.failed == 0, server.log_tail()
    assert dict(sampled.codes) == {"OK": 4} and sampled.empty_slates == 0
    assert sampled.short_slates == 0
    # The server's own count of the calls it answered, by status: h2load's and the sampled ones.
    ok = after[PIPELINE.ok] - before.get(PIPELINE.ok, 0.0)
    assert ok == load.requests + sampled.sent
    assert after[PIPELINE.answered] - before.get(PIPELINE.answered, 0.0) == ok
    cpu = (cpu_after[0] - cpu_before[0], cpu_after[1] - cpu_before[1])
    figures = h2load_rate_figures(12, measured, before, after, cpu, PIPELINE)
    assert figures["grpc_ok_at_12rps"] == figures["h2load_answered_at_12rps"] == 24
    assert figures["errors_at_12rps"] == 0 and figures["sampled_errors_at_12rps"] == 0
    by_status = [k for k in figures if k.startswith("errors_") and k != "errors_at_12rps"]
    assert by_status == []  # no call ended with another status
    assert figures["slate_items_per_answer_at_12rps"] == 5.0  # every slate full, k = 5
    assert figures["cpu_ms_pipeline_at_12rps"] > 0


def test_pipeline_cpu_measures_both_paths_in_process_and_frees_milvus_lite(
    settings: Settings, tiny_stores: Prepared
) -> None:
    import subprocess
    import sys

    from benchmarks.serve_load import pipeline_cpu

    users = request_users(tiny_stores.user_ids, 25, unknown_share=0.25, seed=3)
    figures = pipeline_cpu(settings, None, users, k=5, blocks=2)
    assert figures["pipeline_requests_per_block"] == 5
    assert figures["pipeline_cpu_ms_per_request"] > 0
    assert figures["pipeline_cpu_ms_per_request_encoding_per_consumer"] > 0
    # Released: another process (the server, next) can take the file's lock. Asked from another
    # process because POSIX locks never conflict within the process that holds them.
    probe = "import sys; from retrieval.milvus_lite import milvus_lite_in_use as u; "
    probe += "from pathlib import Path; sys.exit(u(Path(sys.argv[1])))"
    assert subprocess.run([sys.executable, "-c", probe, settings.milvus.uri]).returncode == 0
