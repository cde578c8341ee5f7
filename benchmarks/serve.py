"""``aether bench serve``: client-side latency of ``Recommend`` over real gRPC under offered load.

Set-up (no stream worker needed: the rows the worker would produce are written straight into the
online store, so the benchmark measures serving alone):

1. the Feast repo is applied in a fresh namespace ``bench_<hex>`` (Redis keys deleted afterwards);
2. item embeddings are indexed in a Milvus Lite file (a temp folder) and saved at
   ``serving.build_pipeline.embeddings_path(settings)``: with a ranker, its own item embeddings (its
   user encoder then drives the ANN source, as after ``aether index --ranker-checkpoint``),
   otherwise PPMI-SVD embeddings of the ratings (``--index`` chooses);
3. item rows (title, categories, popularity = rating count) and user rows (each user's last 200
   rated items as ``recent_items``, oldest first) go into ``FeastOnlineStore``; item-to-item
   transitions of every user's sequence go into the Redis transition store (top 200 per anchor,
   full totals, as ``RedisTransitionStore.apply`` would leave them);
4. the ranker: ``--checkpoint PATH``, else ``artifacts/ranker.pt`` if it exists, else none
   (retrieval order, said in the output).

The server runs in a **subprocess** (``python -m benchmarks.serve_server``: ``aether serve``'s
server plus a Prometheus endpoint and per-stage timers) so the load generator and the server do
not share a GIL; they still share the machine's cores, which the output says. Load is
**open-loop**: requests are sent on a fixed schedule at each offered rate whatever the answers do
(``Recommend.future``), and latency is measured from the *scheduled* send time, so a server (or
generator) that falls behind shows up in the percentiles instead of silently lowering the rate.
Requests go to random known users (seeded) and a share of unknown users, ``k=10``, 1 s deadline.

``--processes N`` runs the server as ``aether serve`` does with ``serving.processes = N``: a
supervisor (``serving.processes``) that owns Milvus Lite and ``N`` workers sharing the port with
``SO_REUSEPORT``. The kernel balances connections, not requests, so the generator then spreads
its requests over ``--channels`` connections (default 8 per process); each worker has its own
metrics endpoint, and the figures are their sums.

Where the server's time goes, per rate (scraped from the child's Prometheus endpoint and
``/proc``): the pipeline histogram ``aether_recommend_seconds``, wall and thread-CPU time of each
stage and retrieval source (the pipeline's own stage observer, ``serving.stage_observer``), CPU
per request of the Python server processes and of the other
processes under them (Milvus Lite), and CPU by Python thread name (``native`` = threads Python
did not start: BLAS, gRPC core, librdkafka). ``--server-env KEY=VALUE`` / ``--torch-threads N``
try server-side settings. ``--pipeline-requests N`` first measures the pipeline's CPU per request
in the benchmark's own process, one request at a time (``serve_load.pipeline_cpu``).

``--json PATH`` writes one flat object: ``p50_ms_at_200rps``, ``p99_ms_at_200rps``,
``max_rps_within_20ms_p99`` (highest offered rate with p99 ≤ 20 ms and ≥ 95 % achieved),
``catalogue_items``, ``users``, per-rate ``*_at_<rate>rps`` figures (latency, achieved rate,
errors by status code, fallback share and reasons, stage/thread CPU), ``ranker`` and ``machine``.
Results: ``docs/benchmarks/serving.md``. Modules: ``serve_stores`` (set-up), ``serve_server``
(the server child and its instruments), ``serve_load`` (the load); this one runs them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.serve_load import LoadResult, offered_load, pipeline_cpu, request_users
from benchmarks.serve_server import ROOT, ServerProcess
from benchmarks.serve_stores import cleanup, prepare_stores
from core.settings import Settings

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
        "--torch-threads",
        type=int,
        help="torch.set_num_threads in the server after its set-up (default: 1, as "
        "serving.build_pipeline sets it)",
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment of the server process (e.g. OPENBLAS_NUM_THREADS=1)",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="server processes sharing the port (serving.processes; SO_REUSEPORT)",
    )
    parser.add_argument(
        "--channels",
        type=int,
        help="client channels (connections), requests round-robin over them "
        "(default: 1 with one server process, 8 per process otherwise)",
    )
    parser.add_argument(
        "--index",
        choices=("auto", "ranker", "ppmi-svd"),
        default="auto",
        help="item embeddings in Milvus: the ranker's own (its user encoder drives the ANN "
        "source, as after `aether index --ranker-checkpoint`) or PPMI-SVD of the ratings "
        "(mean-history encoder); auto: the ranker's when there is a ranker",
    )
    parser.add_argument(
        "--pipeline-requests",
        type=int,
        default=0,
        help="first, this many requests to the pipeline in this process, one at a time (no "
        "gRPC): CPU per request with the user encoded once, and encoded by each consumer",
    )
    parser.add_argument("--unknown-share", type=float, default=0.1, help="requests for new users")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--deadline-s", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the figures here as one flat JSON object")


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
    answered = max(1.0, delta("aether_recommend_seconds_count"))  # pipeline runs
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
    figures.update(stage_figures(suffix, delta, after))
    return figures


def stage_figures(
    suffix: str, delta: Callable[[str], float], after: dict[str, float]
) -> dict[str, float]:
    """Mean wall and thread-CPU ms per call of each pipeline stage that ran (the pipeline's own
    stage observer, ``serving.stage_observer``), and of the whole pipeline (``pipeline``)."""
    calls_and_totals = {
        "pipeline": (
            "aether_recommend_seconds_count",
            "aether_recommend_seconds_sum",
            "aether_recommend_cpu_seconds_total",
        )
    }
    for key in after:
        found = re.fullmatch(r'aether_recommend_stage_seconds_count\{stage="([^"]+)"\}', key)
        if found:
            labels = "{" + f'stage="{found.group(1)}"' + "}"
            calls_and_totals[found.group(1)] = (
                key,
                f"aether_recommend_stage_seconds_sum{labels}",
                f"aether_recommend_stage_cpu_seconds_total{labels}",
            )
    figures: dict[str, float] = {}
    for stage, (count, wall, cpu) in calls_and_totals.items():
        calls = delta(count)
        if calls > 0:
            figures[f"wall_ms_{stage}{suffix}"] = round(1000 * delta(wall) / calls, 3)
            figures[f"cpu_ms_{stage}{suffix}"] = round(1000 * delta(cpu) / calls, 3)
    return figures


def command(args: argparse.Namespace) -> int:
    from benchmarks.machine import machine_description
    from core.errors import DependencyUnavailable
    from core.heap import freeze_startup_heap
    from core.settings import load_settings
    from core.subprocesses import free_loopback_port, stop_process
    from interactions.movielens import load_movielens
    from stack.env_file import load_stack_env
    from stack.redis_server import redis_answers
    from stack.tansu import create_namespace_topics, kafka_answers, start_tansu

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
        ranker_index = args.index == "ranker" or (args.index == "auto" and checkpoint is not None)
        if ranker_index and checkpoint is None:
            raise SystemExit("--index ranker needs a ranker checkpoint")
        prepared = prepare_stores(
            settings,
            data.ratings,
            data.items,
            seed=args.seed,
            ranker_checkpoint=checkpoint if ranker_index else None,
        )
        print(
            f"set-up: {len(prepared.item_ids)} items, {len(prepared.user_ids)} users, "
            f"{prepared.transition_anchors} transition anchors in {time.perf_counter() - started:.0f} s"
        )
        figures: dict[str, Any] = {}
        if args.pipeline_requests:
            figures.update(
                pipeline_cpu(
                    settings,
                    checkpoint,
                    request_users(
                        prepared.user_ids, args.pipeline_requests, args.unknown_share, args.seed
                    ),
                    k=args.k,
                )
            )
            print(f"in-process pipeline, one request at a time: {figures}")
        server = ServerProcess.start(
            settings,
            checkpoint,
            work / "server.log",
            torch_threads=args.torch_threads,
            extra_env=dict(pair.split("=", 1) for pair in args.server_env),
            processes=args.processes,
        )
        channels = args.channels or (1 if args.processes == 1 else 8 * args.processes)
        print(f"server pid {server.process.pid} at {server.address}")
        if checkpoint is None:
            print("no ranker checkpoint: the server answers in retrieval order")
        warmup = request_users(
            prepared.user_ids, int(50 * args.warmup_seconds), args.unknown_share, args.seed + 999
        )
        freeze_startup_heap()  # the generator's own collector pauses would read as latency
        warm = offered_load(
            server.address, warmup, 50, k=args.k, deadline_s=args.deadline_s, channels=channels
        )
        print(f"warm-up: {dict(warm.codes)}; model versions answered: {dict(warm.model_versions)}")
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
                server.address,
                users,
                rate,
                k=args.k,
                deadline_s=args.deadline_s,
                channels=channels,
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
        "index_embeddings": "ranker" if ranker_index else "ppmi-svd",
        "dataset": args.dataset,
        "torch_threads": args.torch_threads or "default",
        "server_processes": args.processes,
        "client_channels": channels,
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
