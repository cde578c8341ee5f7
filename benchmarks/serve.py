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
**open-loop**: requests are sent on a fixed schedule at each offered rate whatever the answers do.
``--load h2load`` (default, ``serve_h2load``): Debian's ``h2load`` (C) posts the gRPC calls, one
h2load process per request body (``--h2load-bodies`` users per rate), latency
from its per-request log (request sent → response ended); a sampled gRPC client
(``--sample-rps``) checks ``grpc-status`` and slates meanwhile, and the server's own status
counter says how many of h2load's calls were answered OK. ``--load python`` (``serve_load``): the
Python gRPC client (``Recommend.future``), 0.5–2.4 ms of CPU per request on the server's cores,
latency from the *scheduled* send time, every answer checked. Requests go to known users (seeded)
and a share of unknown users, ``k=10``, 1 s deadline (``grpc-timeout``).

``--floor bare|servicer|aio`` needs no stores: a gRPC server answering a constant 10-item
response with ``aether serve``'s server settings, loaded at the same rates (``serve_floor``): the
CPU per request of the server without the pipeline (``aio``: the bare server on ``grpc.aio``).
Without it, the pipeline's run ends with the
``servicer`` floor (one process) at 100 rps under the same load generator:
``floor_server_cpu_ms_per_request`` next to ``server_cpu_ms_per_request`` (``--no-floor``
skips it).

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

``--json PATH`` writes one flat object: ``load_generator``, ``server_cpu_ms_per_request`` (at
100 rps: every server process and Milvus Lite), ``floor_server_cpu_ms_per_request``,
``floor_p99_ms``, ``floor_variant``, ``p50_ms_at_200rps``,
``p99_ms_at_200rps``, ``max_rps_within_20ms_p99`` (highest offered rate with p99 ≤ 20 ms and
≥ 95 % of it answered OK), ``catalogue_items``, ``users``, per-rate ``*_at_<rate>rps`` figures
(latency, achieved rate, requests, errors by status code, fallbacks, client and server CPU per
request, stage/thread CPU; with h2load also ``h2load_*``, ``grpc_ok`` and ``sampled_*``: each key
in docs/benchmarks/serving.md), ``ranker`` and ``machine``. Results: ``docs/benchmarks/serving.md``.
Modules: ``serve_stores`` (set-up), ``serve_server`` (the server child and its instruments),
``serve_h2load`` and ``serve_load`` (the two loads), ``serve_measure`` (the rates and their
figures), ``serve_floor`` (the floor); this one runs them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks.serve_floor import measure_floor
from benchmarks.serve_h2load import h2load_executable
from benchmarks.serve_load import pipeline_cpu, request_users
from benchmarks.serve_measure import (
    PIPELINE,
    LoadPlan,
    h2load_settings,
    measure_rates,
    print_table,
    warm_up_and_idle,
    within_target,
)
from benchmarks.serve_server import ROOT, ServerProcess
from benchmarks.serve_stores import cleanup, prepare_stores
from core.settings import Settings

DEFAULT_CHECKPOINT = ROOT / "artifacts" / "ranker.pt"
# After the pipeline, the same load at this rate against the floor server
# (``floor_server_cpu_ms_per_request``; issue 19 compares the pipeline's CPU with it).
FLOOR_VARIANT, FLOOR_RATE = "servicer", 100


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
    parser.add_argument(
        "--load",
        choices=("h2load", "python"),
        default="h2load",
        help="the load generator: h2load (Debian's nghttp2-client, in C; its CPU is reported) "
        "with a sampled gRPC client checking answers, or the Python gRPC client (0.5-2.4 ms of "
        "CPU per request, on the server's cores)",
    )
    parser.add_argument(
        "--h2load-bodies",
        type=int,
        default=8,
        help="h2load: distinct request bodies (users) per rate, one h2load process each",
    )
    parser.add_argument(
        "--sample-rps",
        type=float,
        default=5.0,
        help="h2load: rate of the sampled gRPC client that checks status and slate (0: none)",
    )
    parser.add_argument(
        "--no-floor",
        action="store_true",
        help=f"skip the floor measured after the pipeline ({FLOOR_VARIANT} at {FLOOR_RATE} rps)",
    )
    parser.add_argument(
        "--floor",
        choices=("bare", "servicer", "aio"),
        help="no pipeline, no stores: a gRPC server answering a constant 10-item response "
        "(bare: grpc.server alone; servicer: aether serve's server and servicer around a "
        "constant pipeline; aio: bare on grpc.aio), loaded at the same rates: the server's "
        "floor CPU per request",
    )
    parser.add_argument("--unknown-share", type=float, default=0.1, help="requests for new users")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--deadline-s", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the figures here as one flat JSON object")


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

    if args.floor:
        from benchmarks.serve_floor import floor_command

        return floor_command(args)
    if args.load == "h2load":
        h2load_executable()  # fail before the set-up
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
        plan = LoadPlan.from_args(args, channels, work / "load")
        print(f"server pid {server.process.pid} at {server.address}")
        if checkpoint is None:
            print("no ranker checkpoint: the server answers in retrieval order")
        warmup = request_users(
            prepared.user_ids, int(50 * args.warmup_seconds), args.unknown_share, args.seed + 999
        )
        freeze_startup_heap()  # the generator's own collector pauses would read as latency
        warm, idle = warm_up_and_idle(server, warmup, plan)
        print(f"warm-up: {dict(warm.codes)}; model versions answered: {dict(warm.model_versions)}")
        print(f"idle server (3 s, no requests): {idle}")
        load_before = os.getloadavg()[0]
        measured = measure_rates(server, prepared.user_ids, plan, PIPELINE)
        figures.update(measured.figures)
        load_after = os.getloadavg()[0]
        # What known users were answered with (unknown users always get retrieval order).
        served = measured.model_versions
        model_version = served.most_common(1)[0][0] if checkpoint and served else "none"
        server.stop()
        server = None
        floor: dict[str, Any] = {}
        if not args.no_floor:
            try:
                floor = measure_floor(
                    FLOOR_VARIANT,
                    replace(plan, rates=[FLOOR_RATE], work=work / "floor"),
                    args.warmup_seconds,
                    args.seed,
                )
            except Exception as exc:  # the pipeline's figures are kept; the floor is said missing
                print(f"floor not measured: {exc}")
    finally:
        if server is not None:
            server.stop()
        cleanup(settings, topics if tansu_pid is None else None)
        if tansu_pid is not None:
            stop_process(tansu_pid)
        shutil.rmtree(work, ignore_errors=True)

    summary = {
        "load_generator": args.load,
        # at 100 rps offered: every server process and Milvus Lite's server (issue 19)
        "server_cpu_ms_per_request": figures.get("server_cpu_ms_per_request_at_100rps"),
        # the same load against a servicer around a constant slate, one process (serve_floor)
        "floor_server_cpu_ms_per_request": floor.get(
            f"server_cpu_ms_per_request_at_{FLOOR_RATE}rps"
        ),
        "floor_p99_ms": floor.get(f"p99_ms_at_{FLOOR_RATE}rps"),
        "floor_variant": FLOOR_VARIANT if floor else "none",
        "p50_ms_at_200rps": figures.get("p50_ms_at_200rps"),
        "p99_ms_at_200rps": figures.get("p99_ms_at_200rps"),
        "max_rps_within_20ms_p99": max(within_target(plan.rates, figures), default=0),
        "catalogue_items": len(prepared.item_ids),
        "users": len(prepared.user_ids),
        "offered_rates": plan.rates,
        "seconds_per_rate": args.seconds,
        "unknown_user_share": args.unknown_share,
        "k": args.k,
        "ranker": model_version,
        "index_embeddings": "ranker" if ranker_index else "ppmi-svd",
        "dataset": args.dataset,
        "torch_threads": args.torch_threads or "default",
        "server_processes": args.processes,
        "client_channels": channels,
        **h2load_settings(plan),
        "server_env": " ".join(args.server_env) or "none",
        **idle,
        # The machine is shared: its 1-minute load average before and after the measured rates.
        "loadavg_1m_before": round(load_before, 2),
        "loadavg_1m_after": round(load_after, 2),
    }
    machine = machine_description()
    print_table(plan.rates, figures)
    if floor:
        print(
            f"floor ({FLOOR_VARIANT}, one process) at {FLOOR_RATE} rps: "
            f"{summary['floor_server_cpu_ms_per_request']} ms of server CPU per request, "
            f"p99 {summary['floor_p99_ms']} ms"
        )
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
