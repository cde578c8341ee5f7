"""``aether bench live``: what the streaming buys, measured through the running system.

The offline protocols score a model on logged data; this replays a dataset's future through the
real broker, worker and gRPC servers and scores what was *served*:

1. Global temporal split of the ratings (rare items filtered, as every protocol does):
   ``T`` = the 90 % quantile of event time (``interactions.sequences.temporal_split``). The
   ranker was fitted on events before ``T_val`` and selected on ``[T_val, T)`` only
   (``--checkpoint PATH``, checked against the split; else fitted here for ``--train-minutes``).
2. Two deployments (``benchmarks.live_stack``): **live** — a real ``aether worker`` consumes the
   catalogue and every rating before ``T``; **frozen** — a copy of the live namespace's online
   state taken at that moment, with no worker after it. Both index the ranker's item embeddings in
   their own Milvus Lite file and serve the same checkpoint from their own server process.
3. The ratings after ``T`` are replayed in event-time order, as fast as the requests allow
   (``benchmarks.live_replay``). For a seeded sample of ``--users`` warm users, each of their first
   ``--events-per-user`` ratings after ``T`` is a request: *before* its events are published, the
   live server, the frozen server and the non-personalised slate (an unknown user, the user's
   rated items excluded) are asked for ``k = 10`` over gRPC, and scored against the rated item.
   Then the events go to Kafka and the live row is polled until it shows them (freshness).
4. Figures (``benchmarks.live_figures``): NDCG@10 / HR@10 per arm with user-resampled 95 % CIs,
   coverage, Gini and novelty of what each arm served, gRPC p50/p99 during the replay,
   freshness p50/p99, and the gain of live over frozen with its CI. The same model on the same
   requests offline (``benchmarks.live_offline``), and a step-by-step walk from that figure to the
   served one (features, retrieval recall, serving).

Serving runs as ``aether serve`` does except: exploration slots 0 (a Thompson draw per slate
would add noise to every arm and is not part of a ranking protocol; ``--exploration-slots``),
and a 1 s pipeline deadline (``--deadline-ms``; the product's 100 ms budget is for an unloaded
server, here the worker, two servers and the replay share the cores), both said in the output.

``--json PATH`` writes one flat object (``live_users``, ``live_requests``, ``live_ndcg10``,
``live_hr10``, ``frozen_ndcg10``, ``frozen_hr10``, ``popular_ndcg10``, ``live_gain_over_frozen``
and its ``_ci95_low``/``_ci95_high``, ``offline_temporal_ndcg10_same_users``, ``live_p99_ms``,
``live_freshness_p99_ms``, ``machine`` and more); ``--plot PATH`` the three arms over replay
time. The demo's headline (``benchmarks.live_headline``) runs steps 2–4 on the demo's own stack.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.live_figures import K, arm_figures, over_replay_time
from benchmarks.live_offline import diagnosis, offline_figures
from benchmarks.live_replay import (
    ANONYMOUS_USER,
    Answer,
    ReplayLog,
    Request,
    plan_requests,
    popular_excludes,
    replay,
)
from benchmarks.output import print_figures, write_json
from benchmarks.replay_clock import write_clock
from core.settings import Settings

if TYPE_CHECKING:
    import pandas as pd

    from interactions.replay import ReplayMessage
    from serving.client import RecommenderClient

HEADLINE_KEYS = (
    "live_ndcg10",
    "frozen_ndcg10",
    "popular_ndcg10",
    "live_gain_over_frozen",
    "offline_temporal_ndcg10_same_users",
)


@dataclass(frozen=True)
class LiveConfig:
    dataset: str = "ml-1m"
    data: Path | None = None
    users: int = 1000
    events_per_user: int = 5
    limit: int | None = None  # ratings after T replayed (None: all)
    checkpoint: Path | None = None
    train_minutes: float = 10.0  # when no checkpoint is given
    exploration_slots: int = 0
    deadline_ms: int = 1000
    refresh_s: float = 5.0
    workers: int = 2  # live worker processes, one consumer group
    max_replay_minutes: float | None = None  # stop asking after this long (figures so far)
    recall_probe: bool = True
    seed: int = 0
    plot: Path | None = None
    progress: bool = True


@dataclass
class LiveResult:
    figures: dict[str, Any]
    log: ReplayLog
    diagnosis: list[str] = field(default_factory=list)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="ml-1m", choices=("ml-latest-small", "ml-1m"))
    parser.add_argument("--data", type=Path, help="dataset folder (default ../shared/datasets/…)")
    parser.add_argument("--users", type=int, default=1000, help="users sampled (warm at T)")
    parser.add_argument("--events-per-user", type=int, default=5, help="requests per user")
    parser.add_argument("--limit", type=int, help="replay only the first N ratings after T")
    parser.add_argument(
        "--checkpoint",
        type=Path,
        help="ranker from `aether train --split temporal` on this dataset (checked against "
        "the split); default: fit one here for --train-minutes, selected on validation",
    )
    parser.add_argument("--train-minutes", type=float, default=10.0)
    parser.add_argument(
        "--workers", type=int, default=2, help="live worker processes (one consumer group)"
    )
    parser.add_argument(
        "--max-replay-minutes",
        type=float,
        help="stop the replay after this long; figures cover the requests asked so far",
    )
    parser.add_argument("--exploration-slots", type=int, default=0)
    parser.add_argument("--deadline-ms", type=int, default=1000, help="serving pipeline budget")
    parser.add_argument("--no-recall-probe", action="store_true", help="skip the k=200 probe")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", type=Path, help="PNG of the three arms over replay time")
    parser.add_argument("--json", type=Path, help="write the figures here as one flat JSON object")


def command(args: argparse.Namespace) -> int:
    from benchmarks.machine import machine_description

    config = LiveConfig(
        dataset=args.dataset,
        data=args.data,
        users=args.users,
        events_per_user=args.events_per_user,
        limit=args.limit,
        checkpoint=args.checkpoint,
        train_minutes=args.train_minutes,
        exploration_slots=args.exploration_slots,
        workers=args.workers,
        max_replay_minutes=args.max_replay_minutes,
        deadline_ms=args.deadline_ms,
        recall_probe=not args.no_recall_probe,
        seed=args.seed,
        plot=args.plot,
    )
    result = run_live(config)
    machine = machine_description()
    result.figures["machine"] = machine
    print_figures(result.figures)
    print("\n".join(result.diagnosis))
    print(f"machine: {machine}")
    write_json(args.json, result.figures)
    return 0


def _ranker(config: LiveConfig, work: Path, say: Callable[[str], None]) -> Any:
    """The temporal split's ranker: given (checked against the split) or fitted here."""
    from interactions.movielens import load_split
    from ranker.fit import load_or_fit
    from ranker.train import TrainConfig

    split = load_split(config.dataset, config.data, "temporal")
    train_config = TrainConfig(
        max_minutes=config.train_minutes, seed=config.seed, progress=config.progress
    )
    if config.checkpoint is None:
        say(f"no --checkpoint: fitting the temporal ranker for ≤ {config.train_minutes} min")
    checkpoint, path = load_or_fit(
        split,
        config.dataset,
        config.checkpoint,
        work / f"ranker-temporal-{config.dataset}.pt",
        {"max_length": 200},
        train_config,
        threads=1,
    )
    return split, checkpoint, path


def run_live(
    config: LiveConfig, base: Settings | None = None, say: Callable[[str], None] = print
) -> LiveResult:
    """The whole benchmark (module docstring). ``base`` gives the broker and Redis (default: the
    environment, as ``aether stack up`` left it; an in-memory Tansu when no broker answers)."""
    from core.errors import DependencyUnavailable
    from core.settings import load_settings
    from core.subprocesses import free_loopback_port, stop_process
    from stack.env_file import load_stack_env
    from stack.redis_server import delete_namespace_keys, redis_answers
    from stack.tansu import kafka_answers, start_tansu

    if base is None:
        load_stack_env()  # what `aether stack up` wrote; the environment wins
        base = load_settings()
    redis_url = base.redis.url.get_secret_value()
    if not redis_answers(redis_url):
        raise DependencyUnavailable("redis", f"{redis_url} does not answer")
    work = Path(tempfile.mkdtemp(prefix="aether-bench-live-"))
    tansu_pid = None
    if not kafka_answers(base.kafka.bootstrap_servers):
        port = free_loopback_port()
        tansu_pid = start_tansu(port, work / "tansu.log")
        base = base.model_copy(
            update={
                "kafka": base.kafka.model_copy(update={"bootstrap_servers": f"127.0.0.1:{port}"})
            }
        )
    run_id = uuid.uuid4().hex[:8]
    from benchmarks.live_stack import deployment_settings

    deployments = {
        role: deployment_settings(base, role, run_id, work) for role in ("live", "frozen")
    }
    try:
        return _run(config, deployments, work, say)
    finally:
        for settings in deployments.values():
            delete_namespace_keys(redis_url, settings.namespace, cluster=settings.redis.cluster)
        if tansu_pid is not None:
            stop_process(tansu_pid)
        shutil.rmtree(work, ignore_errors=True)


def _run(
    config: LiveConfig, deployments: dict[str, Settings], work: Path, say: Callable[[str], None]
) -> LiveResult:

    from benchmarks.live_stack import (
        Processes,
        clone_online_state,
        index_ranker_items,
        loadavg,
        start_server,
        start_worker,
    )
    from core.subprocesses import free_loopback_port
    from evaluation.baselines import CatalogueIndex, RecentPopular, popularity_counts
    from features.store import FeastOnlineStore
    from interactions.movielens import load_movielens
    from interactions.replay import catalog_events, rating_events
    from interactions.sequences import events_before, filter_rare_items, user_sequences
    from serving.client import RecommenderClient
    from streams.progress import wait_until_caught_up
    from streams.publish import make_producer, publish
    from streams.topics import ensure_topics

    started = time.perf_counter()
    live, frozen = deployments["live"], deployments["frozen"]
    data = load_movielens(config.dataset, config.data)
    ratings = filter_rare_items(data.ratings)  # the protocols' catalogue, for every arm
    split, checkpoint, checkpoint_path = _ranker(config, work, say)
    cutoff = int(split.cutoff_ms)
    past = ratings[ratings["timestamp_ms"] < cutoff]
    future, requests = plan_requests(
        ratings,
        cutoff,
        users=config.users,
        events_per_user=config.events_per_user,
        limit=config.limit,
        seed=config.seed,
    )
    say(
        f"{config.dataset}: {len(past):,} ratings before T, {len(future):,} replayed after it; "
        f"{len(requests):,} requests of {len({r.user_id for r in requests}):,} users; "
        f"ranker {checkpoint.model_version} (best epoch {checkpoint.metadata.get('best_epoch')}, "
        f"validation NDCG@10 {checkpoint.metadata.get('best_validation_ndcg10')})"
    )
    processes = Processes([], [])
    try:
        for settings in deployments.values():
            ensure_topics(settings)
            index_ranker_items(settings, checkpoint_path, data.items, past)
        worker_ports = [free_loopback_port() for _ in range(config.workers)]
        for n, port in enumerate(worker_ports):
            processes.workers.append(start_worker(live, work / f"worker-{n}.log", port))
        producer = make_producer(live.kafka.bootstrap_servers)
        topic = live.topic("events")
        items_topic = live.topic("items")
        catalogue_messages = catalog_events(config.dataset, ratings, data.items)
        publish(
            producer,
            items_topic,
            catalogue_messages,
            total=len(catalogue_messages),
            description="catalogue",
        )
        publish(producer, topic, rating_events(config.dataset, past), description="history < T")
        ingest_started = time.perf_counter()
        wait_until_caught_up(live, 300, progress=config.progress)
        history_s = time.perf_counter() - ingest_started
        copied = clone_online_state(
            live.redis.url.get_secret_value(),
            live.namespace,
            frozen.namespace,
            user_ids=past["user_id"].astype(str).unique(),
        )
        say(
            f"history applied by the live worker ({history_s:.0f} s after publishing); "
            f"{copied:,} keys copied to the frozen namespace (its state as of T)"
        )
        server_env = {
            "AETHER_BANDIT__EXPLORATION_SLOTS": str(config.exploration_slots),
            "AETHER_SERVING__DEADLINE_MS": str(config.deadline_ms),
        }
        # Serving time is the replay's event time (benchmarks.replay_clock.FileClock): T until
        # the first request, then each request's own time (replay_log).
        clock_file = work / "serving-clock"
        write_clock(clock_file, cutoff)
        servers = {}
        for role, settings in deployments.items():
            servers[role] = start_server(
                settings,
                checkpoint_path,
                work / f"server-{role}.log",
                refresh_s=config.refresh_s,
                extra_env=server_env,
                clock_file=clock_file,
            )
            processes.servers.append(servers[role])
        candidates = live.serving.candidates
        timeout_s = max(5.0, 3 * config.deadline_ms / 1000)
        clients = {
            role: RecommenderClient(s.address, timeout_s=timeout_s) for role, s in servers.items()
        }
        live_store = FeastOnlineStore(live.redis, live.deployment)
        watch_store = FeastOnlineStore(live.redis, live.deployment)  # the watch's own client
        max_exclude = live.serving.max_exclude

        def probe(request: Request) -> tuple[str, ...]:
            slate = clients["live"].recommend(request.user_id, candidates)
            return tuple(i.item_id for i in slate.items)

        def progress(done: int, total: int) -> None:
            if config.progress and (done % 250 == 0 or done == total):
                say(f"  {done:,}/{total:,} requests, load {loadavg()}")

        messages = list(rating_events(config.dataset, future))
        load_before = loadavg()
        log = replay_log(
            future,
            messages,
            requests,
            producer=producer,
            topic=topic,
            clients=clients,
            read_live_rows=live_store.read_users,
            read_watched_rows=watch_store.read_users,
            max_exclude=max_exclude,
            max_seconds=config.max_replay_minutes * 60 if config.max_replay_minutes else None,
            probe=probe if config.recall_probe else None,
            progress=progress,
            set_clock=lambda now_ms: write_clock(clock_file, now_ms),
        )
        load_after = loadavg()
        attribution = attribution_totals(worker_ports)
        for client in clients.values():
            client.close()
        live_store.close()
        watch_store.close()
    finally:
        processes.stop_all()

    catalogue = CatalogueIndex(split.items)
    before_t = events_before(ratings, cutoff)
    popularity = popularity_counts(user_sequences(before_t), catalogue)
    figures, ranks = arm_figures(
        log, catalogue.items, popularity, before_t["user_id"].nunique(), seed=config.seed
    )
    complete = [s for s in log.served if all(a in s.answers for a in ranks)]
    offline, offline_ranks = offline_figures(
        complete,
        checkpoint,
        catalogue,
        RecentPopular.from_events(catalogue, before_t, cutoff, None),
        ranks["live"],
        seed=config.seed,
    )
    figures.update(offline)
    figures.update(
        {
            "dataset": config.dataset,
            "cutoff_ms": cutoff,
            "k": K,
            "candidates": candidates,
            "events_per_user": config.events_per_user,
            "users_requested": config.users,
            "replay_limit": config.limit if config.limit is not None else "all",
            "ranker": checkpoint.model_version,
            "ranker_best_epoch": checkpoint.metadata.get("best_epoch"),
            "ranker_validation_ndcg10": checkpoint.metadata.get("best_validation_ndcg10"),
            "ranker_train_seconds": checkpoint.metadata.get("train_seconds"),
            "exploration_slots": config.exploration_slots,
            "live_workers": config.workers,
            "replay_stopped_early": log.stopped_early,
            "requests_planned": len(requests),
            "serving_deadline_ms": config.deadline_ms,
            "history_ratings": len(past),
            "history_apply_seconds": history_s,
            "frozen_keys_copied": copied,
            **attribution,
            "loadavg_1m_before_replay": load_before,
            "loadavg_1m_after_replay": load_after,
            "total_seconds": time.perf_counter() - started,
        }
    )
    if config.plot is not None:
        days, by_arm = over_replay_time(complete, {**ranks, "offline": offline_ranks})
        plot_arms(days, by_arm, figures, config.plot)
    figures = {k: (round(v, 5) if isinstance(v, float) else v) for k, v in figures.items()}
    lines = diagnosis(figures)
    return LiveResult(figures, log, lines)


def attribution_totals(worker_ports: Sequence[int]) -> dict[str, int]:
    """The live workers' reward attribution at the end of the replay, summed over the group:
    shown slots decided (clicked or not) and clicked, and events too late for attribution.
    Slots are decided only when impressions and events share one timeline (the servers'
    ``FileClock``)."""
    from dashboard.scrape import counter_totals
    from dashboard.targets import metrics_url

    names = {
        "live_attribution_decided_slots": "aether_bandit_impressions_total",
        "live_attribution_rewarded_slots": "aether_bandit_rewards_total",
        "live_late_events": "aether_stream_late_events_total",
    }
    totals = dict.fromkeys(names, 0)
    for port in worker_ports:
        for key, value in counter_totals(metrics_url("127.0.0.1", port), names).items():
            totals[key] += value
    return totals


def replay_log(
    future: pd.DataFrame,
    messages: Sequence[ReplayMessage],
    requests: Sequence[Request],
    *,
    producer: Any,
    topic: str,
    clients: Mapping[str, RecommenderClient],
    read_live_rows: Callable[[list[str]], Mapping[str, object]],
    read_watched_rows: Callable[[list[str]], Mapping[str, object]],
    max_exclude: int,
    max_seconds: float | None,
    probe: Callable[[Request], tuple[str, ...]] | None = None,
    progress: Callable[[int, int], None] | None = None,
    set_clock: Callable[[int], None] | None = None,
) -> ReplayLog:
    """``replay`` wired to a producer, the live and frozen servers' clients and the live online
    store, asking the three arms (``benchmarks.live.grpc_arms``): the benchmark's replay and the
    demo's headline alike. ``set_clock``: moves the servers' serving time (``replay``)."""
    return replay(
        future,
        messages,
        requests,
        produce=lambda m: produce_retrying(producer, topic, m),
        flush=lambda: producer.flush(30),
        ask=grpc_arms(clients["live"], clients["frozen"], max_exclude),
        read_live_rows=read_live_rows,
        read_watched_rows=read_watched_rows,
        probe=probe,
        max_seconds=max_seconds,
        progress=progress,
        set_clock=set_clock,
    )


def grpc_arms(
    live: RecommenderClient, frozen: RecommenderClient, max_exclude: int
) -> dict[str, Callable[[Request], Answer]]:
    """The three arms of the replay over gRPC (``benchmarks.live_replay``): **live** and
    **frozen** ask their server for the request's user; **popular** asks the live server for a
    user it has never seen, the user's rated items excluded."""

    def asker(client: RecommenderClient, popular: bool = False) -> Callable[[Request], Answer]:
        def ask(request: Request) -> Answer:
            sent = time.perf_counter()
            if popular:
                slate = client.recommend(
                    ANONYMOUS_USER, K, exclude_item_ids=popular_excludes(request, max_exclude)
                )
            else:
                slate = client.recommend(request.user_id, K)
            return Answer(
                tuple(i.item_id for i in slate.items),
                (time.perf_counter() - sent) * 1000,
                slate.fallback,
            )

        return ask

    return {"live": asker(live), "frozen": asker(frozen), "popular": asker(live, popular=True)}


def produce_retrying(producer: Any, topic: str, message: Any) -> None:
    """Produce ``message``, waiting while the producer's local queue is full."""
    while True:
        try:
            producer.produce(topic, value=message.value, key=message.key)
            return
        except BufferError:
            producer.poll(0.05)


def plot_arms(
    days: Any, by_arm: dict[str, Any], figures: dict[str, Any], path: Path, note: str = ""
) -> None:
    """NDCG@10 of each arm per replay-time bin (equal request counts), offline dashed;
    ``note`` leads the title (the demo's "SMALL SAMPLE")."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5), constrained_layout=True)
    ratio = figures["live_gain_over_frozen"]
    gain = f"{ratio:+.1%}" if ratio == ratio else "undefined"  # NaN: frozen found no target
    styles = {"live": "-o", "frozen": "-s", "popular": "-^", "offline": "--"}
    for arm, values in by_arm.items():
        label = f"{arm} ({figures.get(f'{arm}_ndcg10', figures.get('offline_temporal_ndcg10_same_users')):.3f} overall)"
        ax.plot(
            days,
            values,
            styles.get(arm, "-"),
            label=label,
            color=None if arm != "offline" else "grey",
        )
    ax.set_xlabel("event time after the first request (days; bins of equal request counts)")
    ax.set_ylabel("NDCG@10 of the served slate")
    ax.set_title(
        f"{note + ', ' if note else ''}{figures['dataset']}: {figures['live_requests']:,} requests of {figures['live_users']:,} "
        f"users, replayed after T (live − frozen {gain})"
    )
    ax.legend()
    ax.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
