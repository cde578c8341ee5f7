"""The two deployments of ``aether bench live`` (``benchmarks.live``) and the processes they run.

* **live** — namespace ``live_<run>``: a real stream worker (``aether worker``) consumes the
  catalogue and the history before ``T``, then keeps consuming the replayed future; its server
  re-reads the catalogue every few seconds, as ``aether serve`` does.
* **frozen** — namespace ``frozen_<run>``: the same deployment with its online state as of ``T``
  and no worker after it. Its state is a copy of the live namespace's Redis keys taken once the
  live worker has applied exactly the history before ``T`` (``clone_online_state``): what a worker
  that stopped at ``T`` leaves, without consuming the whole history a second time on a small
  machine. Each deployment has its own Milvus Lite file and Feast project; both index the same
  ranker's item embeddings and serve the same checkpoint.

Servers run as child processes (``python -m benchmarks.live_server``) so the replay, the two
servers and the worker do not share a GIL.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.serve_server import ROOT, ServerProcess, child_env, start_on_free_ports
from core.settings import Settings

ROLES = ("live", "frozen")


def deployment_settings(base: Settings, role: str, run_id: str, work: Path) -> Settings:
    """Settings of one deployment of the run: its own namespace, data dir and Milvus Lite file,
    the broker and Redis of ``base``."""
    overrides: dict[str, Any] = {  # the environment's aliases, set explicitly (env ignored)
        "namespace": f"{role}_{run_id}",
        "data_dir": work / role / ".aether",
        "KAFKA_BOOTSTRAP_SERVERS": base.kafka.bootstrap_servers,
        "REDIS_URL": base.redis.url.get_secret_value(),
        "MILVUS_URI": str(work / f"{role}-milvus.db"),
    }
    return Settings(**overrides)


def index_ranker_items(
    settings: Settings, checkpoint: Path, items: Any, ratings_before_cutoff: Any
) -> int:
    """Feast repo applied; the ranker's own item embeddings indexed in Milvus and saved where the
    server reads them (as ``aether index --ranker-checkpoint`` leaves a deployment: the server
    then queries the index with the ranker's user encoder). Returns the items indexed."""
    from features.store import apply_repo
    from ranker.scoring import SASRecRanker
    from retrieval.embeddings import save_embeddings
    from retrieval.index import ItemIndex
    from retrieval.milvus_lite import release_milvus_lite
    from retrieval.movielens_catalog import catalog_from_movielens, item_rows
    from serving.build_pipeline import embeddings_path

    apply_repo(settings.redis, settings.deployment)
    ranker = SASRecRanker.from_checkpoint(checkpoint)
    item_ids, matrix = ranker.item_embeddings()
    path = embeddings_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_embeddings(path, item_ids, matrix, model_version=ranker.model_version)
    catalog = catalog_from_movielens(items, ratings_before_cutoff)
    # The server is another process: close the index and free the Milvus Lite file's lock.
    with ItemIndex.from_settings(settings.milvus, settings.deployment) as index:
        index.publish(item_rows(item_ids, matrix, catalog), progress=False)
    release_milvus_lite(settings.milvus.uri)
    return len(item_ids)


def start_worker(settings: Settings, log_path: Path, metrics_port: int) -> subprocess.Popen[bytes]:
    """``aether worker`` on the deployment's namespace. The catalogue's text embeddings are off
    (the benchmark indexes the ranker's embeddings itself, as the demo does)."""
    env = {**child_env(settings), "AETHER_STREAM__EMBED_CATALOGUE": "false"}
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "aether.cli.worker", "--metrics-port", str(metrics_port)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def stop(process: subprocess.Popen[bytes], timeout_s: float = 20) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def clone_online_state(
    redis_url: str, source: str, target: str, user_ids: Iterable[str] = (), batch: int = 500
) -> int:
    """Copy every Redis key of namespace ``source`` to namespace ``target``: ``<source>:*``
    (stream state, transitions, posteriors) and Feast's rows, whose keys end with the project
    (= the namespace). Keys named by a hash of namespace and user id (the seen sets,
    ``streams.statestore.seen_items_key``) are re-keyed for ``user_ids``. Returns the keys
    copied. Run while nothing writes ``source``."""
    import redis

    from streams.statestore import seen_items_key

    client = redis.Redis.from_url(redis_url)
    copied = 0
    try:
        renames: list[tuple[bytes, bytes]] = []
        prefix, suffix = f"{source}:".encode(), source.encode()
        for key in client.scan_iter(match=f"{source}:*", count=batch):
            renames.append((key, f"{target}:".encode() + key[len(prefix) :]))
        for key in client.scan_iter(match=f"*{source}", count=batch):
            if not key.startswith(prefix):
                renames.append((key, key[: -len(suffix)] + target.encode()))
        renames += [
            (seen_items_key(source, u).encode(), seen_items_key(target, u).encode())
            for u in user_ids
        ]
        for start in range(0, len(renames), batch):
            with client.pipeline(transaction=False) as pipe:
                for old, new in renames[start : start + batch]:
                    pipe.copy(old, new, replace=True)  # type: ignore[arg-type]
                copied += sum(bool(done) for done in pipe.execute())
    finally:
        client.close()
    return copied


def start_server(
    settings: Settings,
    checkpoint: Path,
    log_path: Path,
    *,
    refresh_s: float | None,
    extra_env: dict[str, str],
    clock_file: Path | None = None,
    timeout_s: float = 240,
) -> ServerProcess:
    """``python -m benchmarks.live_server`` for the deployment; returns once it serves.
    ``clock_file``: its serving time (``benchmarks.replay_clock.FileClock``)."""
    env = {**child_env(settings), **extra_env}

    def launch(port: int, metrics_ports: list[int]) -> ServerProcess:
        argv = [sys.executable, "-m", "benchmarks.live_server", "--port", str(port)]
        argv += ["--metrics-port", str(metrics_ports[0]), "--checkpoint", str(checkpoint)]
        argv += ["--refresh-s", str(refresh_s or 0)]
        if clock_file is not None:
            argv += ["--clock-file", str(clock_file)]
        return ServerProcess.launch(argv, port, metrics_ports, log_path, env=env)

    return start_on_free_ports(launch, exporters=1, timeout_s=timeout_s)


@dataclass
class Processes:
    """What the run started, stopped in reverse order whatever happens."""

    workers: list[subprocess.Popen[bytes]]
    servers: list[ServerProcess]

    def stop_all(self) -> None:
        for server in reversed(self.servers):
            try:
                server.stop()
            except Exception as exc:  # clean-up must not hide the benchmark's result
                print(f"could not stop server {server.address}: {exc}")
        for worker in reversed(self.workers):
            stop(worker)


def loadavg() -> float:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return float("nan")
