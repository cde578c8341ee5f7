"""``aether dashboard`` as a process: it listens, scrapes on its own loop and answers its paths."""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from dashboard_processes import WorkerMetrics

from core.subprocesses import free_loopback_port
from dashboard.scrape import ScrapeTarget, parse_exposition
from dashboard.server import DashboardConfig, DashboardServer

pytestmark = pytest.mark.integration


@pytest.fixture
def worker() -> Iterator[WorkerMetrics]:
    process = WorkerMetrics()
    process.serve()
    process.advance(random.Random(1), ctr={"control": 0.05, "treatment": 0.05})
    yield process
    process.close()


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_aether_dashboard_serves_page_json_and_its_own_metrics(worker: WorkerMetrics) -> None:
    port = free_loopback_port()
    command = [
        sys.executable, "-m", "aether.cli.dashboard", "--port", str(port),
        "--worker-metrics", worker.url, "--interval", "0.2", "--no-topics",
    ]  # fmt: skip
    env = {**os.environ, "AETHER_NAMESPACE": "tdashcli"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        status: dict = {}
        while time.monotonic() < deadline and process.poll() is None:
            with contextlib.suppress(urllib.error.URLError, ConnectionError):  # not listening yet
                status = json.loads(get(base + "api/status")[1])
            if status and status["targets"][0]["up"]:
                break
            time.sleep(0.2)
        assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
        assert status["targets"] == [
            {"name": "worker", "url": worker.url, "up": True, "error": None,
             "last_success": status["targets"][0]["last_success"]},
        ]  # fmt: skip
        assert status["status"]["consumer_lag_records"] is not None

        code, page = get(base)
        assert code == 200 and b"AetherRec operator view" in page
        assert get(base + "nope")[0] == 404
        code, own = get(base + "metrics")
        samples = parse_exposition(own.decode())
        assert samples[("aether_dashboard_requests_total", (("path", "/"),))] == 1
        assert samples[("aether_dashboard_requests_total", (("path", "other"),))] == 1
        assert samples[("aether_dashboard_scrape_errors_total", (("target", "worker"),))] == 0
    finally:
        process.terminate()
        process.wait(10)


def test_promtool_accepts_the_dashboards_own_metrics(promtool: str) -> None:
    config = DashboardConfig(
        port=0, targets=(ScrapeTarget("worker", "http://127.0.0.1:9/metrics"),)
    )
    with DashboardServer(config) as dashboard:
        dashboard.scrape_once()  # a failed scrape: the error counter has a sample > 0
        get(dashboard.url)
        code, exposition = get(dashboard.url + "metrics")
    assert code == 200
    assert b'aether_dashboard_scrape_errors_total{target="worker"}' in exposition
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=exposition,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, (result.stdout + result.stderr).decode()
