"""``aether bench serve``: client-side latency of ``Recommend`` over real gRPC under offered load.

Set-up (no stream worker needed: the rows the worker would produce are written straight into the
online store, so the benchmark measures serving alone):

1. the Feast repo is applied in a fresh namespace ``bench_<hex>`` (Redis keys deleted afterwards);
2. PPMI-SVD item embeddings from the ratings are indexed in a Milvus Lite file (a temp folder) and
   saved at ``serving.bootstrap.embeddings_path(settings)``;
3. item rows (title, categories, popularity = rating count) and user rows (each user's last 200
   rated items as ``recent_items``, oldest first) go into ``FeastOnlineStore``; item-to-item
   transitions of every user's sequence go into the Redis transition store (top 200 per anchor,
   full totals, as ``RedisTransitionStore.apply`` would leave them);
4. the ranker: ``--checkpoint PATH``, else ``artifacts/ranker.pt`` if it exists, else none
   (retrieval order, said in the output).

The server runs in a **subprocess** (``python -m serving.bench serve-child``: ``aether serve``'s
wiring plus a Prometheus endpoint and per-stage timers) so the load generator and the server do
not share a GIL; they still share the machine's cores, which the output says. Load is
**open-loop**: requests are sent on a fixed schedule at each offered rate whatever the answers do
(``Recommend.future``), and latency is measured from the *scheduled* send time, so a server (or
generator) that falls behind shows up in the percentiles instead of silently lowering the rate.
Requests go to random known users (seeded) and a share of unknown users, ``k=10``, 1 s deadline.

Where the server's time goes, per rate (scraped from the child's Prometheus endpoint and
``/proc``): the pipeline histogram ``aether_recommend_seconds``, wall and thread-CPU time of each
stage and retrieval source, CPU per request of the server process and of its children (Milvus
Lite), and CPU by Python thread name (``native`` = threads Python did not start: BLAS, gRPC core,
librdkafka). ``--server-env KEY=VALUE`` / ``--torch-threads N`` try server-side settings.

``--json PATH`` writes one flat object: ``p50_ms_at_200rps``, ``p99_ms_at_200rps``,
``max_rps_within_20ms_p99`` (highest offered rate with p99 ≤ 20 ms and ≥ 95 % achieved),
``catalogue_items``, ``users``, per-rate ``*_at_<rate>rps`` figures (latency, achieved rate,
errors by status code, fallback share and reasons, stage/thread CPU), ``ranker`` and ``machine``.
Results: ``docs/benchmarks/serving.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aether.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CHECKPOINT = ROOT / "artifacts" / "ranker.pt"
P99_TARGET_MS = 20.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="ml-1m", choices=("ml-latest-small", "ml-1m"))
    parser.add_argument(
        "--data", type=Path, help="dataset folder (default ../shared/datasets/ml-1m)"
    )
    parser.add_argument("--rates", default="25,50,100,200,300,400", help="offered requests/s")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each rate")
    parser.add_argument("--warmup-seconds", type=float, default=3.0, help="at 50 rps, not reported")
    parser.add_argument("--checkpoint", type=Path, help=f"ranker (default {DEFAULT_CHECKPOINT})")
    parser.add_argument("--no-ranker", action="store_true", help="serve retrieval order")
    parser.add_argument(
        "--torch-threads", type=int, help="torch.set_num_threads in the server (default: torch's)"
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment of the server process (e.g. OPENBLAS_NUM_THREADS=1)",
    )
    parser.add_argument("--unknown-share", type=float, default=0.1, help="requests for new users")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--deadline-s", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the figures here as one flat JSON object")


# -- set-up ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Prepared:
    item_ids: list[str]
    user_ids: list[str]
    transition_anchors: int


def prepare_stores(
    settings: Settings, ratings: Any, items: Any, *, history: int = 200, seed: int = 0
) -> Prepared:
    """Feast repo, Milvus index, embeddings file, item/user rows and transitions for serving."""
    from aether.stack_milvus import release_milvus_lite
    from features.rows import ItemFeatureRow, UserFeatureRow
    from features.store import FeastOnlineStore, apply_repo
    from retrieval.embeddings import ppmi_svd_embeddings, save_embeddings
    from retrieval.index import ItemIndex
    from retrieval.movielens import catalog_from_movielens, item_rows
    from serving.bootstrap import embeddings_path

    apply_repo(settings)
    started = time.perf_counter()
    item_ids, matrix = ppmi_svd_embeddings(
        ratings["user_id"].tolist(), ratings["item_id"].tolist(), seed=seed
    )
    print(f"PPMI-SVD embeddings of {len(item_ids)} items in {time.perf_counter() - started:.1f} s")
    path = embeddings_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_embeddings(path, item_ids, matrix)
    catalog = catalog_from_movielens(items, ratings)
    # The server is another process: close the index and free the Milvus Lite file's lock.
    with ItemIndex.from_settings(settings) as index:
        index.publish(item_rows(item_ids, matrix, catalog), progress=False)
    release_milvus_lite(settings.milvus.uri)

    end_ms = int(ratings["timestamp_ms"].max())
    counts = ratings["item_id"].value_counts().to_dict()
    store = FeastOnlineStore(settings)
    try:
        item_feature_rows = [
            ItemFeatureRow(
                item_id=item_id,
                event_time_ms=end_ms,
                popularity=float(counts.get(item_id, 0)),
                created_time_ms=meta.created_time_ms if meta else None,
                title=meta.title if meta else "",
                categories=tuple(meta.categories) if meta else (),
            )
            for item_id in item_ids
            for meta in [catalog.get(item_id)]
        ]
        sequences = {
            str(user): (list(group["item_id"]), int(group["timestamp_ms"].iloc[-1]))
            for user, group in ratings.groupby("user_id", sort=False)  # ratings are time-ordered
        }
        user_rows = [
            UserFeatureRow(user_id=user, event_time_ms=last_ms, recent_items=tuple(seq[-history:]))
            for user, (seq, last_ms) in sequences.items()
        ]
        for start in range(0, len(item_feature_rows), 500):
            store.write_items(item_feature_rows[start : start + 500])
        for start in range(0, len(user_rows), 500):
            store.write_users(user_rows[start : start + 500])
    finally:
        store.close()
    anchors = write_transitions(settings, [seq for seq, _ in sequences.values()])
    return Prepared(item_ids, sorted(sequences), anchors)


def write_transitions(settings: Settings, sequences: list[list[str]], keep: int = 200) -> int:
    """Each sequence's transitions, as the stream would have applied them; returns anchors."""
    import redis

    from retrieval.cooccurrence import (
        RedisTransitionStore,
        increments_from_sequence,
        merge_increments,
    )

    merged = merge_increments(*(increments_from_sequence(seq) for seq in sequences))
    by_anchor: dict[str, dict[str, float]] = {}
    for (anchor, item), weight in merged.items():
        by_anchor.setdefault(anchor, {})[item] = weight
    client = redis.Redis.from_url(settings.redis.url.get_secret_value())
    try:
        # The prefix ``retrieval.bootstrap.transition_store`` gives the serving side.
        store = RedisTransitionStore(client, settings.redis_key("retrieval"), keep)
        anchors = list(by_anchor)
        for start in range(0, len(anchors), 200):
            head: dict[tuple[str, str], float] = {}
            rest: dict[str, float] = {}
            for anchor in anchors[start : start + 200]:
                ranked = sorted(by_anchor[anchor].items(), key=lambda kv: (-kv[1], kv[0]))
                head.update({(anchor, item): weight for item, weight in ranked[:keep]})
                rest[anchor] = sum(weight for _, weight in ranked[keep:])
            store.apply(head)
            # The store keeps the top ``keep`` neighbours but the full total of each anchor.
            with client.pipeline(transaction=False) as pipe:
                for anchor, weight in rest.items():
                    if weight > 0:
                        pipe.hincrbyfloat(store.totals_key, anchor, weight)
                pipe.execute()
    finally:
        client.close()
    return len(by_anchor)


def cleanup(settings: Settings, topics: list[str] | None = None) -> None:
    """Delete the namespace's Redis keys, and ``topics`` (on a broker the benchmark did not start:
    a shared broker should not keep the benchmark's impressions)."""
    from aether.stack_redis import delete_keys_matching, delete_keys_with_prefix, glob_escape

    url = settings.redis.url.get_secret_value()
    delete_keys_with_prefix(url, f"{settings.namespace}:")
    delete_keys_matching(url, "*" + glob_escape(settings.namespace))
    if topics:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
        for topic, future in admin.delete_topics(topics, operation_timeout=10).items():
            try:
                future.result(timeout=15)
            except Exception as exc:  # clean-up must not hide the benchmark's result
                print(f"could not delete topic {topic}: {exc}")


# -- the server process ---------------------------------------------------------------------------
@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    address: str
    metrics_url: str
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
    ) -> ServerProcess:
        from aether.errors import DependencyUnavailable
        from aether.stack_process import free_loopback_port
        from serving.client import RecommenderClient

        port, metrics_port = free_loopback_port(), free_loopback_port()
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
            "REDIS_URL": settings.redis.url.get_secret_value(),
            "AETHER_MILVUS__URI": settings.milvus.uri,
            "AETHER_NAMESPACE": settings.namespace,
            "AETHER_DATA_DIR": str(settings.data_dir),
        }
        env.update(extra_env or {})
        env.pop("MILVUS_URI", None)  # pymilvus would parse a Lite path there as a server address
        argv = [sys.executable, "-m", "serving.bench", "serve-child", "--port", str(port)]
        argv += ["--metrics-port", str(metrics_port)]
        argv += ["--checkpoint", str(checkpoint)] if checkpoint else ["--no-ranker"]
        argv += ["--torch-threads", str(torch_threads)] if torch_threads else []
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        server = cls(
            process, f"127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}/metrics", log_path
        )
        deadline = time.monotonic() + timeout_s
        with RecommenderClient(server.address) as client:
            while True:
                try:
                    client.wait_until_serving(2.0)
                    break
                except DependencyUnavailable:
                    if process.poll() is not None or time.monotonic() > deadline:
                        server.stop()
                        raise DependencyUnavailable(
                            "recommender", f"server did not start:\n{server.log_tail()}"
                        ) from None
        return server

    def metrics(self) -> dict[str, float]:
        text = urllib.request.urlopen(self.metrics_url, timeout=5).read().decode()
        return parse_metrics(text)

    def cpu_seconds(self) -> tuple[float, float]:
        """CPU time of the server process, and of its children (Milvus Lite's ``milvus``)."""
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


def process_tree_cpu_seconds(pid: int) -> tuple[float, float]:
    """``(CPU s of pid, CPU s of its descendants)`` from ``/proc`` (Linux)."""
    ticks = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / ticks
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        tree.update(children)
        frontier.extend(children)
    return times.get(pid, 0.0), sum(times.get(p, 0.0) for p in tree - {pid})


# -- the load --------------------------------------------------------------------------------------
@dataclass
class LoadResult:
    offered_rps: float
    sent: int
    latencies_ms: list[float] = field(default_factory=list)  # successful calls only
    codes: Counter[str] = field(default_factory=Counter)
    fallbacks: int = 0
    fallback_reasons: Counter[str] = field(default_factory=Counter)
    model_versions: Counter[str] = field(default_factory=Counter)
    short_slates: int = 0
    elapsed_s: float = 0.0
    client_cpu_s: float = 0.0

    @property
    def ok(self) -> int:
        return self.codes.get("OK", 0)

    @property
    def achieved_rps(self) -> float:
        return self.ok / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


def request_users(user_ids: list[str], count: int, unknown_share: float, seed: int) -> list[str]:
    """``count`` user ids: known users drawn uniformly, and ``unknown_share`` never-seen ones."""
    rng = np.random.default_rng(seed)
    known = rng.choice(np.asarray(user_ids), size=count)
    unknown = rng.random(count) < unknown_share
    return [f"bench-new-{seed}-{n}" if unknown[n] else str(known[n]) for n in range(count)]


def offered_load(
    address: str,
    users: list[str],
    rate: float,
    *,
    k: int = 10,
    deadline_s: float = 1.0,
    max_in_flight: int = 1000,
) -> LoadResult:
    """Send one request per user at ``rate``/s on a fixed schedule (open loop); wait for all."""
    import grpc

    from serving.proto import recommender_pb2 as pb
    from serving.proto import recommender_pb2_grpc as pb_grpc

    result = LoadResult(offered_rps=rate, sent=0)
    lock = threading.Lock()
    in_flight = [0]
    done = threading.Event()
    last_done = [0.0]

    def finished(scheduled: float, future: grpc.Future) -> None:
        now = time.perf_counter()
        code = future.code()
        with lock:
            in_flight[0] -= 1
            last_done[0] = max(last_done[0], now)
            result.codes[code.name] += 1
            if code is grpc.StatusCode.OK:
                reply = future.result()
                result.latencies_ms.append((now - scheduled) * 1000)
                result.fallbacks += bool(reply.fallback)
                result.fallback_reasons.update(reply.fallback_reasons)
                result.model_versions[reply.model_version] += 1
                result.short_slates += len(reply.items) < k
            if in_flight[0] == 0 and result.sent == len(users):
                done.set()

    channel = grpc.insecure_channel(address)
    stub = pb_grpc.RecommenderStub(channel)
    requests = [pb.RecommendRequest(user_id=user, k=k) for user in users]
    cpu_before = time.process_time()
    started = time.perf_counter() + 0.01
    try:
        for n, request in enumerate(requests):
            scheduled = started + n / rate
            pause = scheduled - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            with lock:
                if in_flight[0] >= max_in_flight:
                    result.codes["CLIENT_OVERLOADED"] += 1
                    result.sent += 1
                    continue
                in_flight[0] += 1
                result.sent += 1
            future = stub.Recommend.future(request, timeout=deadline_s)
            future.add_done_callback(lambda f, s=scheduled: finished(s, f))
        with lock:
            if in_flight[0] == 0:
                done.set()
        done.wait(deadline_s + 10)
    finally:
        channel.close()
    result.elapsed_s = max(last_done[0], started + len(users) / rate) - started
    result.client_cpu_s = time.process_time() - cpu_before
    return result


# -- the server child: ``aether serve``'s wiring plus stage timers and a metrics endpoint ----------
class StageTimers:
    """Wall time and the calling thread's CPU time of each timed call, as Prometheus summaries.

    Under load the wall time of a stage includes waiting for the GIL; its thread CPU time does
    not (nor CPU spent in other processes: Redis, Milvus Lite), so CPU shows what a stage costs.
    """

    def __init__(self) -> None:
        from prometheus_client import Summary

        self._wall = Summary("aether_bench_stage_seconds", "Stage wall time", ["stage"])
        self._cpu = Summary("aether_bench_stage_cpu_seconds", "Stage thread CPU", ["stage"])

    def wrap(self, function: Any, stage: str) -> Any:
        wall, cpu = self._wall.labels(stage), self._cpu.labels(stage)

        def timed(*args: Any, **kwargs: Any) -> Any:
            started, started_cpu = time.perf_counter(), time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                cpu.observe(time.thread_time() - started_cpu)
                wall.observe(time.perf_counter() - started)

        return timed


class _Timed:
    """Forwards every attribute to ``target``; its ``method`` is timed as ``stage``."""

    def __init__(self, target: Any, method: str, timers: StageTimers, stage: str) -> None:
        self._target, self._method = target, method
        self._timed = timers.wrap(getattr(target, method), stage)

    def __getattr__(self, name: str) -> Any:
        return self._timed if name == self._method else getattr(self._target, name)


def instrument(pipeline: Any) -> None:
    """Time the pipeline's stages and each retrieval source (attribute swaps, bench-only).

    Defensive on purpose: a stage the pipeline no longer has is simply not timed."""
    import dataclasses

    timers = StageTimers()
    retriever = pipeline.retrieval.retriever
    retriever.plans = [
        dataclasses.replace(
            plan, source=_Timed(plan.source, "candidates", timers, f"source:{plan.source.name}")
        )
        for plan in retriever.plans
    ]
    timed_retriever = _Timed(retriever, "retrieve", timers, "retrieval")
    pipeline.retrieval = dataclasses.replace(pipeline.retrieval, retriever=timed_retriever)
    wrapped = {
        "_features": ("read_users", "features"),
        "_ranker": ("score", "ranking"),
        "_impressions": ("publish", "impression_produce"),
    }
    for attribute, (method, stage) in wrapped.items():
        if getattr(pipeline, attribute, None) is not None:
            setattr(
                pipeline, attribute, _Timed(getattr(pipeline, attribute), method, timers, stage)
            )
    for method, stage in (
        ("_rerank", "rerank"),
        ("_explore", "explore"),
        ("_log_impression", "impression_log"),
    ):
        if hasattr(pipeline, method):  # instance attributes shadow the methods
            setattr(pipeline, method, timers.wrap(getattr(pipeline, method), stage))
    pipeline.recommend = timers.wrap(pipeline.recommend, "pipeline")


class ThreadCpuCollector:
    """Prometheus collector: CPU seconds of this process's threads by *Python* thread name
    (``grpc_3`` → ``grpc``; OS names are all ``python``); threads unknown to Python (gRPC core,
    librdkafka, torch) are summed as ``native``."""

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily

        ticks = os.sysconf("SC_CLK_TCK")
        names = {t.native_id: re.sub(r"[-_\d]+$", "", t.name) for t in threading.enumerate()}
        family = CounterMetricFamily(
            "aether_bench_thread_cpu_seconds", "CPU by thread name", labels=["thread"]
        )
        totals: dict[str, float] = {}
        for task in Path("/proc/self/task").glob("*"):
            try:
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # the thread exited meanwhile
            name = names.get(int(task.name), "native") or "?"
            totals[name] = totals.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
        for name, seconds in totals.items():
            family.add_metric([name], seconds)
        yield family


def serve_child(argv: list[str]) -> int:
    """The benchmark's server process. No catalogue refresh: the catalogue is static here."""
    from prometheus_client import start_http_server

    from aether.settings import load_settings
    from serving.bootstrap import build_serving_app
    from serving.server import serve_forever, start_server

    parser = argparse.ArgumentParser(prog="serving.bench serve-child")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--no-ranker", action="store_true")
    parser.add_argument("--torch-threads", type=int)
    args = parser.parse_args(argv)
    settings = load_settings()
    serving = settings.serving.model_copy(update={"port": args.port})
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    missing = Path(tempfile.gettempdir()) / f"no-ranker-{uuid.uuid4().hex}.pt"
    app = build_serving_app(settings, checkpoint=missing if args.no_ranker else args.checkpoint)
    instrument(app.pipeline)
    from prometheus_client import REGISTRY

    REGISTRY.register(ThreadCpuCollector())
    start_http_server(args.metrics_port, addr="127.0.0.1")
    running = start_server(app.pipeline, serving)
    print(f"serving on {running.address}", flush=True)
    try:
        serve_forever(running, grace_s=2.0)
    finally:
        app.close()
    return 0


# -- the benchmark ----------------------------------------------------------------------------------
def rate_figures(
    rate: int,
    load: LoadResult,
    before: dict[str, float],
    after: dict[str, float],
    server_cpu_s: tuple[float, float],
) -> dict[str, Any]:
    """Flat ``*_at_<rate>rps`` figures of one rate, client and server side."""

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    suffix = f"_at_{rate}rps"
    answered = max(1.0, delta("aether_recommend_requests_total"))
    figures: dict[str, Any] = {
        f"p50_ms{suffix}": round(load.percentile_ms(50), 2),
        f"p90_ms{suffix}": round(load.percentile_ms(90), 2),
        f"p99_ms{suffix}": round(load.percentile_ms(99), 2),
        f"achieved_rps{suffix}": round(load.achieved_rps, 1),
        f"errors{suffix}": load.sent - load.ok,
        f"fallback_share{suffix}": round(load.fallbacks / max(1, load.ok), 3),
        f"short_slates{suffix}": load.short_slates,
        f"server_pipeline_mean_ms{suffix}": round(
            1000 * delta("aether_recommend_seconds_sum") / answered, 3
        ),
        # All server CPU, then the Python server process alone (its GIL bounds one process).
        f"server_cpu_ms_per_request{suffix}": round(1000 * sum(server_cpu_s) / answered, 3),
        f"server_python_cpu_ms_per_request{suffix}": round(1000 * server_cpu_s[0] / answered, 3),
        f"client_cpu_ms_per_request{suffix}": round(
            1000 * load.client_cpu_s / max(1, load.sent), 3
        ),
    }
    for reason, count in sorted(load.fallback_reasons.items()):
        figures[f"fallback_{re.sub(r'[^a-z0-9]+', '_', reason.lower())}{suffix}"] = count
    for code, count in sorted(load.codes.items()):
        if code != "OK":
            figures[f"errors_{code}{suffix}"] = count
    for key in after:
        found = re.fullmatch(r'aether_bench_thread_cpu_seconds_total\{thread="([^"]+)"\}', key)
        if found and 1000 * delta(key) / answered >= 0.1:
            name = re.sub(r"[^a-z0-9]+", "_", found.group(1).lower())
            figures[f"thread_cpu_ms_{name}{suffix}"] = round(1000 * delta(key) / answered, 3)
    for key in after:
        found = re.fullmatch(r'aether_bench_stage_(cpu_)?seconds_sum\{stage="([^"]+)"\}', key)
        if found:
            calls = max(1.0, delta(key.replace("_sum{", "_count{")))
            kind = "cpu" if found.group(1) else "wall"
            name = found.group(2).replace(":", "_")
            figures[f"{kind}_ms_{name}{suffix}"] = round(1000 * delta(key) / calls, 3)
    return figures


def run(args: argparse.Namespace) -> int:
    from aether.errors import DependencyUnavailable
    from aether.machine import machine_description
    from aether.settings import load_settings
    from aether.stack_env import load_stack_env
    from aether.stack_kafka import create_namespace_topics, kafka_answers, start_tansu
    from aether.stack_process import free_loopback_port, stop_process
    from aether.stack_redis import redis_answers
    from interactions.movielens import load_movielens

    rates = [int(x) for x in args.rates.split(",") if x.strip()]
    checkpoint = (
        None
        if args.no_ranker
        else args.checkpoint or (DEFAULT_CHECKPOINT if DEFAULT_CHECKPOINT.is_file() else None)
    )
    load_stack_env()  # what `aether stack up` wrote; the environment wins
    base = load_settings()
    redis_url = base.redis.url.get_secret_value()
    if not redis_answers(redis_url):
        raise DependencyUnavailable("redis", f"{redis_url} does not answer")
    work = Path(tempfile.mkdtemp(prefix="aether-bench-serve-"))
    bootstrap, tansu_pid = base.kafka.bootstrap_servers, None
    if not kafka_answers(bootstrap):  # impressions need a broker: an in-memory Tansu will do
        port = free_loopback_port()
        tansu_pid = start_tansu(port, work / "tansu.log")
        bootstrap = f"127.0.0.1:{port}"
    overrides: dict[str, Any] = {  # the environment's aliases, set explicitly (env ignored)
        "namespace": f"bench_{uuid.uuid4().hex[:10]}",
        "data_dir": work / ".aether",
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "REDIS_URL": redis_url,
        "MILVUS_URI": str(work / "milvus.db"),
    }
    settings = Settings(**overrides)
    server, topics = None, []
    try:
        topics = create_namespace_topics(settings)
        print(f"namespace {settings.namespace} (Redis keys deleted at the end), work dir {work}")
        data = load_movielens(args.dataset, args.data)
        started = time.perf_counter()
        prepared = prepare_stores(settings, data.ratings, data.items, seed=args.seed)
        print(
            f"set-up: {len(prepared.item_ids)} items, {len(prepared.user_ids)} users, "
            f"{prepared.transition_anchors} transition anchors in {time.perf_counter() - started:.0f} s"
        )
        server = ServerProcess.start(
            settings,
            checkpoint,
            work / "server.log",
            torch_threads=args.torch_threads,
            extra_env=dict(pair.split("=", 1) for pair in args.server_env),
        )
        print(f"server pid {server.process.pid} at {server.address}")
        if checkpoint is None:
            print("no ranker checkpoint: the server answers in retrieval order")
        warmup = request_users(
            prepared.user_ids, int(50 * args.warmup_seconds), args.unknown_share, args.seed + 999
        )
        warm = offered_load(server.address, warmup, 50, k=args.k, deadline_s=args.deadline_s)
        print(f"warm-up: {dict(warm.codes)}; model versions answered: {dict(warm.model_versions)}")
        figures: dict[str, Any] = {}
        results: dict[int, LoadResult] = {}
        idle_before, idle_started = server.cpu_seconds(), time.perf_counter()
        time.sleep(3.0)  # no requests: what the server burns by itself
        idle_after, idle_s = server.cpu_seconds(), time.perf_counter() - idle_started
        idle = {
            "server_idle_cpu_cores": round((sum(idle_after) - sum(idle_before)) / idle_s, 3),
            "server_idle_python_cpu_cores": round((idle_after[0] - idle_before[0]) / idle_s, 3),
        }
        print(f"idle server (3 s, no requests): {idle}")
        load_before = os.getloadavg()[0]
        for n, rate in enumerate(rates):
            time.sleep(1.0)  # let the previous rate's stragglers and retries settle
            users = request_users(
                prepared.user_ids, int(rate * args.seconds), args.unknown_share, args.seed + n
            )
            before, cpu_before = server.metrics(), server.cpu_seconds()
            results[rate] = offered_load(
                server.address, users, rate, k=args.k, deadline_s=args.deadline_s
            )
            cpu_after = server.cpu_seconds()
            cpu = (cpu_after[0] - cpu_before[0], cpu_after[1] - cpu_before[1])
            figures.update(rate_figures(rate, results[rate], before, server.metrics(), cpu))
        load_after = os.getloadavg()[0]
        # What known users were answered with (unknown users always get retrieval order).
        served = Counter(v for r in results.values() for v in r.model_versions.elements())
        model_version = served.most_common(1)[0][0] if checkpoint and served else "none"
    finally:
        if server is not None:
            server.stop()
        cleanup(settings, topics if tansu_pid is None else None)
        if tansu_pid is not None:
            stop_process(tansu_pid)
        shutil.rmtree(work, ignore_errors=True)

    within = [
        rate
        for rate, r in results.items()
        if r.percentile_ms(99) <= P99_TARGET_MS and r.achieved_rps >= 0.95 * rate
    ]
    summary = {
        "p50_ms_at_200rps": figures.get("p50_ms_at_200rps"),
        "p99_ms_at_200rps": figures.get("p99_ms_at_200rps"),
        "max_rps_within_20ms_p99": max(within, default=0),
        "catalogue_items": len(prepared.item_ids),
        "users": len(prepared.user_ids),
        "offered_rates": rates,
        "seconds_per_rate": args.seconds,
        "unknown_user_share": args.unknown_share,
        "k": args.k,
        "ranker": model_version,
        "dataset": args.dataset,
        "torch_threads": args.torch_threads or "default",
        "server_env": " ".join(args.server_env) or "none",
        **idle,
        # The machine is shared: its 1-minute load average before and after the measured rates.
        "loadavg_1m_before": round(load_before, 2),
        "loadavg_1m_after": round(load_after, 2),
    }
    machine = machine_description()
    print_table(results, figures)
    print(f"ranker: {model_version}; machine: {machine}")
    print(f"load generator and server share this machine's {os.cpu_count()} cores")
    result = {
        **summary,
        **figures,
        "machine": machine,
        "note": f"load generator shares the {os.cpu_count()} cores with the server",
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def print_table(results: dict[int, LoadResult], figures: dict[str, Any]) -> None:
    """Client-side latency per rate, then the server's CPU and time per stage."""
    print(
        f"{'offered':>7} {'achieved':>8} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} {'fallback':>8}"
        f" {'server ms':>9} {'cpu ms/req':>10} {'python':>7} {'client':>7}"
    )
    for rate, load in results.items():
        s = f"_at_{rate}rps"
        print(
            f"{rate:>7} {load.achieved_rps:>8.1f} {load.percentile_ms(50):>7.2f}"
            f" {load.percentile_ms(99):>7.2f} {load.sent - load.ok:>6}"
            f" {figures[f'fallback_share{s}']:>8.3f} {figures[f'server_pipeline_mean_ms{s}']:>9.2f}"
            f" {figures[f'server_cpu_ms_per_request{s}']:>10.2f}"
            f" {figures[f'server_python_cpu_ms_per_request{s}']:>7.2f}"
            f" {figures[f'client_cpu_ms_per_request{s}']:>7.2f}"
        )
    stages = sorted(
        {k.split("_at_")[0][len("cpu_ms_") :] for k in figures if k.startswith("cpu_ms_")}
    )
    print("server stages, mean per call: thread CPU ms / wall ms")
    print(f"{'offered':>7} " + " ".join(f"{name[:18]:>18}" for name in stages))
    for rate in results:
        s = f"_at_{rate}rps"
        cells = [
            f"{figures.get(f'cpu_ms_{n}{s}', float('nan')):.2f}/{figures.get(f'wall_ms_{n}{s}', float('nan')):.2f}"
            for n in stages
        ]
        print(f"{rate:>7} " + " ".join(f"{c:>18}" for c in cells))
    print("server threads, CPU ms per answered request")
    for rate in results:
        s = f"_at_{rate}rps"
        top = [
            f"{key[len('thread_cpu_ms_') : -len(s)]}={value:.2f}"
            for key, value in figures.items()
            if key.startswith("thread_cpu_ms_") and key.endswith(s)
        ]
        print(f"{rate:>7} " + "  ".join(top))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve-child"]:
        return serve_child(argv[1:])
    parser = argparse.ArgumentParser(prog="aether bench serve", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
