"""Several server processes on one port (``serving.processes``), over real gRPC: both answer,
they share one Milvus Lite file through the supervisor, each exports its own metrics (process i
on the metrics port + i), and SIGTERM stops the group cleanly."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest
from metrics_scrape import consecutive_free_ports

from benchmarks.serve_load import offered_load, request_users
from benchmarks.serve_server import ServerProcess, child_env, descendants, start_on_free_ports
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


def test_aether_serve_with_two_processes_answers_and_stops_gracefully(
    settings: Settings, tiny_stores: Prepared, tmp_path: Path
) -> None:
    from serving.client import RecommenderClient

    aether = str(Path(sys.executable).parent / "aether")
    env = {**child_env(settings), "AETHER_SERVING__PROCESSES": "2"}

    def launch(port: int, metrics_ports: list[int]) -> ServerProcess:
        argv = [aether, "serve", "--port", str(port), "--metrics-port", str(metrics_ports[0])]
        return ServerProcess.launch(argv, port, metrics_ports, tmp_path / "serve.log", env=env)

    def consecutive(count: int) -> list[int]:  # aether serve: process i exports on port + i
        first = consecutive_free_ports(count)
        return [first + i for i in range(count)]

    # the workers load the catalogue, the index and Kafka
    server = start_on_free_ports(launch, exporters=2, timeout_s=120, metrics_ports=consecutive)
    try:
        with RecommenderClient(server.address, timeout_s=5.0) as client:
            slate = client.recommend(tiny_stores.user_ids[0], k=5)
        assert len(slate.items) == 5
        answered = [
            samples.get('aether_recommend_requests_total{status="OK"}', 0.0)
            for samples in server.metrics_by_process()
        ]
        assert sorted(answered) == [0.0, 1.0]  # one process per port; one of them answered
    finally:
        server.process.send_signal(signal.SIGTERM)
        code = server.process.wait(60)
    assert code == 0, server.log_tail()
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
    picks = iter([taken])  # the first launch's metrics port (chosen before its gRPC port)
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
