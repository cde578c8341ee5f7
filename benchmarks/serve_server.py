"""The server side of ``aether bench serve`` (``benchmarks.serve``): the server child process, and
what measures it.

``ServerProcess.start`` runs ``python -m benchmarks.serve_server`` with the stores of ``settings``:
``aether serve``'s server (``serving.processes.run_server``; with ``--processes N``, a
supervisor of ``N`` workers sharing the port, as ``serving.processes = N``), no catalogue refresh
(the catalogue is static here), each process's own Prometheus endpoint (the server's exporter, on
a port the benchmark chose), plus what only the benchmark adds: CPU by thread name
(``ThreadCpuCollector``). Per-stage figures come from the pipeline's own stage observer
(``aether_recommend_stage_seconds{stage}``, ``aether_recommend_stage_cpu_seconds_total{stage}``;
``serving.stage_observer``). ``/proc`` gives the CPU of the server processes and of the
processes under them (Milvus Lite).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.machine import ProcessInfo, read_stat
from core.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def child_env(settings: Settings) -> dict[str, str]:
    """The environment of a child ``aether`` process that uses the same stores as ``settings``."""
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "REDIS_URL": settings.redis.url.get_secret_value(),
        "AETHER_MILVUS__URI": settings.milvus.uri,
        "AETHER_NAMESPACE": settings.namespace,
        "AETHER_DATA_DIR": str(settings.data_dir),
    }
    env.pop("MILVUS_URI", None)  # pymilvus would parse a Lite path there as a server address
    return env


class PortTaken(Exception):
    """Another process listens on a port the server was given."""


def start_on_free_ports(
    launch: Callable[[int, list[int]], ServerProcess],
    *,
    exporters: int,
    timeout_s: float,
    attempts: int = 3,
    metrics_ports: Callable[[int], list[int]] | None = None,
) -> ServerProcess:
    """``launch(port, metrics_ports)`` on free loopback ports, serving. A port free when chosen
    can be taken before the server binds it (by another test's server, say); then the server is
    stopped and launched again on other ports, up to ``attempts`` times.

    ``metrics_ports(exporters)``: how the exporters' ports are chosen (``aether serve`` takes
    consecutive ones); by default, any free ones."""
    from core.errors import DependencyUnavailable
    from core.subprocesses import free_loopback_port

    for attempt in range(1, attempts + 1):
        exporter_ports = (metrics_ports or any_free_ports)(exporters)
        port = next(p for p in iter(free_loopback_port, None) if p not in exporter_ports)
        try:
            return launch(port, exporter_ports).serving(timeout_s)
        except PortTaken as taken:
            if attempt == attempts:
                raise DependencyUnavailable("recommender", str(taken)) from None
    raise AssertionError("unreachable")


def any_free_ports(count: int) -> list[int]:
    """``count`` different free loopback ports (the OS may hand out one twice, as each probe
    closes its socket)."""
    from core.subprocesses import free_loopback_port

    chosen: list[int] = []
    while len(chosen) < count:
        port = free_loopback_port()
        if port not in chosen:
            chosen.append(port)
    return chosen


# -- the server process ---------------------------------------------------------------------------
@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    address: str
    metrics_urls: list[str]  # one Prometheus endpoint per server process
    log_path: Path

    @classmethod
    def start(
        cls,
        settings: Settings,
        checkpoint: Path | None,
        log_path: Path,
        timeout_s: float = 180,
        torch_threads: int | None = None,
        extra_env: dict[str, str] | None = None,
        processes: int = 1,
    ) -> ServerProcess:
        env = {**child_env(settings), **(extra_env or {})}

        def launch(port: int, metrics_ports: list[int]) -> ServerProcess:
            argv = [sys.executable, "-m", "benchmarks.serve_server", "--port", str(port)]
            argv += ["--metrics-ports", ",".join(str(p) for p in metrics_ports)]
            argv += ["--processes", str(processes)]
            argv += ["--checkpoint", str(checkpoint)] if checkpoint else ["--no-ranker"]
            argv += ["--torch-threads", str(torch_threads)] if torch_threads else []
            return cls.launch(argv, port, metrics_ports, log_path, env=env)

        return start_on_free_ports(launch, exporters=processes, timeout_s=timeout_s)

    @classmethod
    def launch(
        cls,
        argv: list[str],
        port: int,
        metrics_ports: list[int],
        log_path: Path,
        env: dict[str, str] | None = None,
    ) -> ServerProcess:
        """Run ``argv`` (a server on ``port`` exporting on ``metrics_ports``), logging to
        ``log_path``; not yet serving."""
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        urls = [f"http://127.0.0.1:{p}/metrics" for p in metrics_ports]
        return cls(process, f"127.0.0.1:{port}", urls, log_path)

    def serving(self, timeout_s: float) -> ServerProcess:
        """Wait until the gRPC port serves and every process's own exporter listens (its log line
        names the URL; only then is a scrape of that port this server's); stop the process and
        raise ``DependencyUnavailable`` when it cannot start, ``PortTaken`` when an exporter
        could not listen."""
        from core.errors import DependencyUnavailable
        from core.metrics_exporter import CANNOT_LISTEN, LISTENING
        from serving.client import RecommenderClient

        deadline = time.monotonic() + timeout_s
        with RecommenderClient(self.address) as client:
            while True:
                log = self.log_path.read_text(errors="replace")
                try:
                    client.wait_until_serving(2.0)
                    if all(f"{LISTENING} {url}" in log for url in self.metrics_urls):
                        self.metrics()
                        return self
                except (DependencyUnavailable, OSError):
                    pass
                if CANNOT_LISTEN in log:
                    self.stop()
                    raise PortTaken(f"a metrics port was taken:\n{self.log_tail()}")
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise DependencyUnavailable(
                        "recommender", f"server did not start:\n{self.log_tail()}"
                    )
                time.sleep(0.5)

    def metrics_by_process(self) -> list[dict[str, float]]:
        """Each server process's samples."""
        return [
            parse_metrics(urllib.request.urlopen(url, timeout=5).read().decode())
            for url in self.metrics_urls
        ]

    def metrics(self) -> dict[str, float]:
        """Every server process's samples, summed (counters and sums add up across them)."""
        total: dict[str, float] = {}
        for samples in self.metrics_by_process():
            for key, value in samples.items():
                total[key] = total.get(key, 0.0) + value
        return total

    def cpu_seconds(self) -> tuple[float, float]:
        """CPU time of the Python server processes (the supervisor and its workers), and of the
        other processes under them (Milvus Lite's ``milvus``)."""
        return process_tree_cpu_seconds(self.process.pid)

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


_SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)$", re.M)


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text → ``{"name{labels}": value}`` (labels as written)."""
    return {name + (labels or ""): float(value) for name, labels, value in _SAMPLE.findall(text)}


def process_table() -> dict[int, ProcessInfo]:
    """Every process on the machine."""
    table = {
        int(entry.name): read_stat(entry / "stat")
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit()
    }
    return {pid: info for pid, info in table.items() if info is not None}


def descendants(pid: int, table: dict[int, ProcessInfo] | None = None) -> set[int]:
    """The processes under ``pid`` (children, their children, ...)."""
    table = process_table() if table is None else table
    found: set[int] = set()
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, info in table.items() if info.parent == parent]
        found.update(children)
        frontier.extend(children)
    return found


def process_tree_cpu_seconds(pid: int) -> tuple[float, float]:
    """``(CPU s of the Python processes in pid's tree, CPU s of the others)``. ``pid`` and its
    ``python`` descendants are the server (one process, or a supervisor and its workers); the
    rest is Milvus Lite."""
    table = process_table()
    tree = descendants(pid, table)
    servers = {pid} | {p for p in tree if table[p].python}
    cpu = {p: info.cpu_s for p, info in table.items()}
    return (
        sum(cpu.get(p, 0.0) for p in servers),
        sum(cpu.get(p, 0.0) for p in tree - servers),
    )


# -- instruments: CPU by thread ----------------------------------------------------------------
class ThreadCpuCollector:
    """Prometheus collector: CPU seconds of this process's threads by *Python* thread name
    (``grpc_3`` → ``grpc``; OS names are all ``python``); threads unknown to Python (gRPC core,
    librdkafka, torch) are summed as ``native``."""

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily

        names = {t.native_id: re.sub(r"[-_\d]+$", "", t.name) for t in threading.enumerate()}
        family = CounterMetricFamily(
            "aether_bench_thread_cpu_seconds", "CPU by thread name", labels=["thread"]
        )
        totals: dict[str, float] = {}
        for task in Path("/proc/self/task").glob("*"):
            info = read_stat(task / "stat")
            if info is None:
                continue  # the thread exited meanwhile
            name = names.get(int(task.name), "native") or "?"
            totals[name] = totals.get(name, 0.0) + info.cpu_s
        for name, seconds in totals.items():
            family.add_metric([name], seconds)
        yield family


@dataclass(frozen=True)
class BenchWorker:
    """One benchmark server process (a ``serving.processes.Worker``): ``run_server`` with its
    metrics exporter on ``metrics_ports[index]``, plus CPU by thread name."""

    metrics_ports: tuple[int, ...]
    torch_threads: int | None = None
    reuse_port: bool = True

    def __call__(
        self, settings: Settings, index: int, options: Any, ready: Callable[[], None]
    ) -> None:
        from prometheus_client import REGISTRY

        from core.settings import MetricsSettings
        from serving.processes import run_server

        # INFO: the exporter's ``LISTENING`` line, which ServerProcess.serving waits
        # for (a no-op in a supervisor's worker, whose logging is configured already)
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )

        def prepare(app: Any) -> None:
            if self.torch_threads:  # after build_serving_app, which sets one thread
                import torch

                torch.set_num_threads(self.torch_threads)
            REGISTRY.register(ThreadCpuCollector())

        def on_serving(running: Any) -> None:
            # run_server exports metrics once the gRPC port serves: the parent takes "every
            # metrics endpoint answers" as "all processes serve".
            print(f"worker {index} serving on {running.address}", flush=True)
            ready()

        metrics = MetricsSettings(host="127.0.0.1", port=self.metrics_ports[index])
        run_server(
            settings.model_copy(update={"metrics": metrics}),
            options,
            reuse_port=self.reuse_port,
            prepare=prepare,
            on_serving=on_serving,
        )


def main(argv: list[str] | None = None) -> int:
    """The benchmark's server: one process, or a supervisor of ``--processes`` workers."""
    from core.settings import load_settings
    from serving.processes import WorkerOptions, supervise

    parser = argparse.ArgumentParser(prog="python -m benchmarks.serve_server")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--metrics-ports", required=True, help="one per process, comma-separated")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--no-ranker", action="store_true")
    parser.add_argument("--torch-threads", type=int)
    args = parser.parse_args(argv)
    settings = load_settings()
    serving = settings.serving.model_copy(update={"port": args.port, "processes": args.processes})
    settings = settings.model_copy(update={"serving": serving})
    missing = Path(tempfile.gettempdir()) / f"no-ranker-{uuid.uuid4().hex}.pt"
    options = WorkerOptions(
        checkpoint=missing if args.no_ranker else args.checkpoint, refresh_s=None, grace_s=2.0
    )
    worker = BenchWorker(
        metrics_ports=tuple(int(p) for p in args.metrics_ports.split(",")),
        torch_threads=args.torch_threads,
        reuse_port=args.processes > 1,
    )
    if args.processes == 1:  # in this process, as `aether serve` runs by default
        worker(settings, 0, options, lambda: None)
        return 0
    return supervise(settings, args.processes, worker=worker, options=options)


if __name__ == "__main__":
    sys.exit(main())
