"""Several server processes on one port (``serving.processes``), over real gRPC: both answer,
they share one Milvus Lite file through the supervisor, each exports its own metrics (process i
on the metrics port + i), and SIGTERM stops the group cleanly."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from metrics_scrape import consecutive_free_ports, families, scrape, value

from benchmarks.serve_load import offered_load, request_users
from benchmarks.serve_server import ServerProcess, child_env, descendants
from benchmarks.serve_stores import Prepared
from core.settings import Settings
from retrieval.milvus_lite import milvus_lite_in_use

pytestmark = pytest.mark.integration


def test_two_processes_share_the_port_and_stop_on_sigterm(
    settings: Settings, tiny_stores: Prepared, tmp_path: Path
) -> None:
    server = ServerProcess.start(settings, None, tmp_path / "server.log", processes=2)
    try:
        workers = descendants(server.process.pid)
        assert len(workers) >= 2, server.log_tail()  # two workers (and Milvus Lite's server)
        # The supervisor holds the Milvus Lite file; the workers are clients of its server.
        assert milvus_lite_in_use(Path(settings.milvus.uri))
        users = request_users(tiny_stores.user_ids, 48, unknown_share=0.25, seed=2)
        load = offered_load(server.address, users, rate=40, k=5, channels=16)
        per_process = [
            samples.get('aether_recommend_requests_total{status="OK"}', 0.0)
            for samples in server.metrics_by_process()
        ]
    finally:
        server.stop()

    assert dict(load.codes) == {"OK": 48}, server.log_tail()
    assert load.short_slates == 0
    assert sum(per_process) == 48  # health checks are not Recommend calls
    assert all(count > 0 for count in per_process), per_process  # both processes served
    assert server.process.returncode == 0, server.log_tail()  # drained and stopped, not killed
    assert not descendants(server.process.pid)  # no worker (nor Milvus Lite) left behind
    assert not milvus_lite_in_use(Path(settings.milvus.uri))  # released with the group


def _aether_serve_two_processes(
    settings: Settings, log_path: Path, attempts: int = 3
) -> tuple[subprocess.Popen[bytes], int, int]:
    """``aether serve`` with two processes once both serve: ``(process, port, metrics port)``.
    Started again on other ports when a metrics port was taken between its choice and the
    exporter's bind (the process logs it; as benchmarks.serve_server.start_on_free_ports)."""
    from core.subprocesses import free_loopback_port

    for _ in range(attempts):
        port, metrics_port = free_loopback_port(), consecutive_free_ports(2)
        argv = [str(Path(sys.executable).parent / "aether"), "serve", "--port", str(port)]
        with log_path.open("wb") as log:
            serve = subprocess.Popen(
                [*argv, "--metrics-port", str(metrics_port)],
                env={**child_env(settings), "AETHER_SERVING__PROCESSES": "2"},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        for _ in range(120):  # the workers load the catalogue, the index and Kafka
            text = log_path.read_text(errors="replace")
            if "(2 processes)" in text:
                break
            assert serve.poll() is None, text
            time.sleep(1.0)
        if "metrics exporter cannot listen" not in log_path.read_text(errors="replace"):
            return serve, port, metrics_port
        serve.send_signal(signal.SIGTERM)
        serve.wait(60)
    raise AssertionError(f"metrics ports taken {attempts} times in a row")


def test_aether_serve_with_two_processes_answers_and_stops_gracefully(
    settings: Settings, tiny_stores: Prepared, tmp_path: Path
) -> None:
    from serving.client import RecommenderClient

    log_path = tmp_path / "serve.log"
    serve, port, metrics_port = _aether_serve_two_processes(settings, log_path)
    try:
        with RecommenderClient(f"127.0.0.1:{port}", timeout_s=5.0) as client:
            slate = client.recommend(tiny_stores.user_ids[0], k=5)
        assert len(slate.items) == 5
        answered = [
            value(
                families(scrape(metrics_port + i))["aether_recommend_requests"],
                "aether_recommend_requests_total",
                status="OK",
            )
            for i in range(2)
        ]
        assert sorted(answered) == [0.0, 1.0]  # one process per port; one of them answered
    finally:
        serve.send_signal(signal.SIGTERM)
        code = serve.wait(60)
    assert code == 0, log_path.read_text(errors="replace")
    assert not milvus_lite_in_use(Path(settings.milvus.uri))


def test_a_metrics_port_taken_before_the_server_binds_it_is_chosen_again(
    settings: Settings, tiny_stores: Prepared, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another gRPC server takes the metrics port between its choice and the exporter's bind
    (another test's server, as once in CI): the benchmark's server starts again on other ports
    instead of scraping the other server."""
    from concurrent import futures

    import grpc

    import core.subprocesses

    squatter = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    taken = squatter.add_insecure_port("127.0.0.1:0")
    squatter.start()
    free = core.subprocesses.free_loopback_port
    picks = iter([free(), taken])  # the first launch: its gRPC port, then the taken one
    monkeypatch.setattr(
        core.subprocesses, "free_loopback_port", lambda: next(picks, None) or free()
    )
    try:
        server = ServerProcess.start(settings, None, tmp_path / "server.log")
        try:
            assert server.metrics_urls != [f"http://127.0.0.1:{taken}/metrics"]
            assert any(key.startswith("aether_bench_thread_cpu") for key in server.metrics())
        finally:
            server.stop()
    finally:
        squatter.stop(None)
