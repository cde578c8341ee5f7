"""The closed-loop demo (``aether demo``): the whole system on the embedded stack, on MovieLens.

1. ``aether stack up``: Tansu broker, Redis, Milvus Lite, the Feast repo applied.
2. The catalogue and the ratings before a cut-off time ``T`` (the 90 % quantile of event time)
   are replayed onto Kafka; ``aether worker`` (Faust) turns them into online features.
3. The SASRec ranker is trained on the same past (a short, time-boxed run; ``aether train`` does
   the full one) — on its own thread while the worker replays, as it needs only the ratings — and
   its item embeddings are indexed in Milvus with a content map.
4. ``aether serve``'s pipeline answers gRPC requests for users who have ratings after ``T``.
   Beside it, a frozen deployment: the online state copied when the worker had applied exactly
   the past, served by a second pipeline with the same release (``benchmarks.live_headline``).
5. Headline, live vs frozen features (``aether bench live``'s protocol, a small sample): the
   ratings after ``T`` of the users *not* in the closed loop are replayed onto Kafka, and before
   each of a warm user's first ratings after ``T`` is published the live server, the frozen one
   and the popular slate are asked for 10 items; one line with NDCG@10 of each arm and the gain
   with its interval, and a plot (``<data_dir>/demo-live.png``).
6. Closed loop: each round, every user's slate is checked against what that user really rated
   after ``T`` (rated ≥ 4 → a click, ≤ 2 → a dismissal), the feedback goes back to Kafka as
   events with ``request_id``, the worker updates the features, and the next round's slates
   follow. Per round it reports hit rate, new items per slate, fallbacks and gRPC latency. Its
   event times start after the last replayed rating (the worker's watermarks are there by then:
   earlier events would be late), one hour per round.

The operator view runs beside it: the built-in dashboard (``aether dashboard``) scrapes the
worker's and the server's metrics and reads ``<ns>.drift``; its URL is printed at the start. In
round ``drift_round`` the demo injects one drift — a broken client that dismisses every item it
shows — and at the end reports what the worker's drift monitors detected, and when.

Each step says how long it took; the end says how many events the worker counted late (none is
expected). Everything it starts it stops, except the stack (``--keep-stack`` leaves everything
up).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from aether.demo_changes import new_titles, publish_new_titles, publish_release, retrain_from_log
from aether.demo_loop import (
    EventClock,
    RoundReport,
    closed_loop_users,
    feedback_events,
    loop_start_ms,
    split_at_quantile,
)
from aether.demo_operators import report_drift, start_operator_view, worker_counters
from benchmarks.live_headline import freeze, frozen_settings, run_headline, serve_frozen
from core.metrics_exporter import SERVER_PORT, start_metrics_exporter
from core.settings import MetricsSettings, Settings
from core.subprocesses import free_loopback_port
from events import encode
from streams.progress import wait_until_caught_up
from streams.publish import producer_for

if TYPE_CHECKING:
    from ranker.train import TrainResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoConfig:
    dataset: str = "ml-latest-small"
    data: Path | None = None
    users: int = 12  # in the closed loop; the other warm users are the headline's
    rounds: int = 4
    drift_round: int = 3  # the round whose feedback is all dismissals (0: no injected drift)
    hold: bool = False  # keep the dashboard up after the loop until Enter is pressed
    k: int = 10
    train_minutes: float = 2.0
    retrain_after: int = 2  # the round after which the ranker is retrained from the log (0: never)
    retrain_minutes: float = 1.0
    new_items_after: int = 1  # the round after which new titles are published (0: never)
    new_items: int = 8  # how many: the future's most liked titles first rated after the cut-off
    content_map_items: int = 600  # titles the text → item-space map is fitted on
    cutoff_quantile: float = 0.9
    headline: bool = True  # live vs frozen features before the loop (benchmarks.live_headline)
    headline_events_per_user: int = 10
    headline_max_seconds: float = 60.0  # the replay stops asking after this long
    seed: int = 0


class Phases:
    """Wall seconds of each step of the demo, said as each step ends and summed up at the end."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self._say = say
        self._started = self._mark = time.monotonic()
        self.seconds: dict[str, float] = {}

    def done(self, name: str) -> None:
        now = time.monotonic()
        self.seconds[name] = now - self._mark
        self._mark = now
        self._say(f"      ({name}: {self.seconds[name]:.0f} s)")

    def summary(self) -> str:
        parts = ", ".join(f"{name} {s:.0f} s" for name, s in self.seconds.items())
        return f"wall time: {parts}; {time.monotonic() - self._started:.0f} s since step 1"


def reset_namespace(settings: Settings) -> None:
    """Start from nothing: the demo owns its namespace, so an earlier run's features, stream state
    and offline log must not shape this run's slates."""
    from features.offline import offline_dir
    from lifecycle.registry import registry_dir
    from stack.redis_server import delete_namespace_keys

    delete_namespace_keys(
        settings.redis.url.get_secret_value(), settings.namespace, cluster=settings.redis.cluster
    )
    shutil.rmtree(offline_dir(settings.deployment), ignore_errors=True)
    # An earlier run's promoted release would be served instead of this run's files.
    shutil.rmtree(registry_dir(settings.deployment), ignore_errors=True)


def start_worker(
    settings: Settings, log_path: Path, metrics_port: int, embed_from_ms: int
) -> subprocess.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "AETHER_NAMESPACE": settings.namespace,
        "AETHER_DATA_DIR": str(settings.data_dir),
        # The catalogue agent embeds the titles published from the cut-off on (the new items);
        # the catalogue before it is indexed in batch (step 3): embedding its thousands of
        # titles in the worker as well would cost minutes of CPU on two cores.
        "AETHER_STREAM__EMBED_CATALOGUE": "true",
        "AETHER_STREAM__EMBED_CATALOGUE_FROM_MS": str(embed_from_ms),
    }
    aether = Path(sys.executable).parent / "aether"
    command = (
        [str(aether), "worker"] if aether.exists() else [sys.executable, "-m", "aether.cli.worker"]
    ) + ["--metrics-port", str(metrics_port)]
    return subprocess.Popen(command, env=env, stdout=log_path.open("ab"), stderr=subprocess.STDOUT)


def train_quietly(past: pd.DataFrame, config: DemoConfig, out: Path) -> TrainResult:
    """The demo's first ranker, on one torch thread (the worker replays on the other core). Its
    per-epoch log is held back (the worker's progress bar is on screen); step 3 prints the
    summary."""
    from interactions.sequences import filter_rare_items, leave_one_out
    from ranker.fit import fit_and_save
    from ranker.train import TrainConfig

    ranker_log = logging.getLogger("ranker")
    level = ranker_log.level
    ranker_log.setLevel(logging.WARNING)
    try:
        return fit_and_save(
            leave_one_out(filter_rare_items(past)),
            config.dataset,
            out,
            {"max_length": 200},
            TrainConfig(max_minutes=config.train_minutes, seed=config.seed, progress=False),
            threads=1,
        )
    finally:
        ranker_log.setLevel(level)


def run_demo(
    settings: Settings, config: DemoConfig, say: Callable[[str], None] = print
) -> list[RoundReport]:
    from interactions.movielens import load_movielens
    from interactions.replay import catalog_events, rating_events
    from retrieval.content import MiniLMTextEncoder
    from retrieval.content_index import ContentIndex
    from retrieval.index import ItemIndex
    from retrieval.milvus_lite import hold_milvus_lite
    from retrieval.movielens_catalog import catalog_from_movielens
    from serving.build_pipeline import build_serving_app, ranker_path
    from serving.client import RecommenderClient
    from serving.server import start_server
    from streams.publish import make_producer, publish
    from streams.topics import ensure_topics

    phases = Phases(say)
    reset_namespace(settings)
    frozen_namespace = ""
    if config.headline:
        frozen = frozen_settings(settings)
        frozen_namespace = frozen.namespace
        reset_namespace(frozen)
    data = load_movielens(config.dataset, config.data)
    past, future, cutoff = split_at_quantile(data.ratings, config.cutoff_quantile)
    say(f"[1/6] {config.dataset}: {len(past):,} ratings before the cut-off, {len(future):,} after")

    topics = ensure_topics(settings)
    worker_port, server_port = free_loopback_port(), free_loopback_port()
    # This process holds the Milvus Lite file (index, serving) and shares it with the worker's
    # catalogue agent (retrieval.milvus_lite).
    milvus = contextlib.ExitStack()
    milvus.enter_context(hold_milvus_lite(settings.milvus.uri))
    log_path = settings.data_dir / "logs" / "demo-worker.log"
    worker = start_worker(settings, log_path, worker_port, embed_from_ms=cutoff)
    server = app = frozen_server = frozen_app = None
    dashboard = start_operator_view(settings, worker_port, server_port)
    say(f"      operator page: {dashboard.url}  (worker and server metrics, drift log)")
    try:
        producer = make_producer(settings.kafka.bootstrap_servers)
        # Point in time: the catalogue as of the cut-off (titles first rated before it).
        catalog_messages = [
            m
            for m in catalog_events(config.dataset, data.ratings, data.items)
            if m.event_time_ms < cutoff
        ]
        publish(
            producer,
            topics.items,
            catalog_messages,
            total=len(catalog_messages),
            description="catalogue",
        )
        publish(
            producer, topics.events, rating_events(config.dataset, past), description="past events"
        )
        phases.done("data")
        say("[2/6] worker: turning the past into online features (the ranker trains meanwhile)")
        first = ranker_path(settings)
        first.parent.mkdir(parents=True, exist_ok=True)
        trainer = ThreadPoolExecutor(1, thread_name_prefix="demo-train")
        trained = trainer.submit(train_quietly, past, config, first)
        trainer.shutdown(wait=False)  # the one task runs on; trained.result() in step 3
        wait_until_caught_up(settings, 180, progress=True)
        if config.headline:
            # The worker has applied exactly the past: the frozen deployment's state is this.
            copied = freeze(settings, past["user_id"].astype(str).unique())
            say(
                f"      state at the cut-off copied to namespace {frozen_namespace} ({copied:,} keys)"
            )
        phases.done("worker")

        say("[3/6] ranker training; its item embeddings into Milvus with a content map")
        catalog = catalog_from_movielens(data.items, past)
        result = trained.result()
        encoder = MiniLMTextEncoder()
        # One client of the Milvus Lite file for this process: publishing and serving share it.
        index = milvus.enter_context(ItemIndex.from_settings(settings.milvus, settings.deployment))
        # An earlier run's new titles must not be there already.
        ContentIndex.from_settings(settings.milvus, settings.deployment, client=index.client).drop()
        published = publish_release(
            settings, index, first, catalog, encoder, config.content_map_items
        )
        say(
            f"      ranker: validation NDCG@10 {result.best_validation_ndcg10:.3f} after "
            f"{result.epochs_run} epochs ({result.train_seconds:.0f}s); release "
            f"{published.release.label if published.release else '?'} promoted"
        )
        phases.done("ranker")
        titles = new_titles(data, future, cutoff, config.new_items)
        new_ids = {item: title for item, title, _ in titles}  # id -> title

        serving_clock = EventClock(cutoff)  # the headline's slates: at the cut-off
        app = build_serving_app(settings, index=index, clock_ms=serving_clock)
        server = start_server(app.pipeline, settings.serving.model_copy(update={"port": 0}))
        # The dashboard scrapes this process as the server (its pipeline runs here).
        start_metrics_exporter(
            MetricsSettings(host="127.0.0.1", port=server_port),
            default_port=SERVER_PORT,
        )
        say(f"[4/6] gRPC Recommender on {server.address}")
        if config.headline:
            frozen_app, frozen_server = serve_frozen(settings, index)
            say(
                f"      frozen deployment on {frozen_server.address}: the same release, the "
                f"online state of {frozen_namespace} (as of the cut-off, no worker after it)"
            )
        phases.done("serve")

        liked: dict[str, set[str]] = defaultdict(set)
        disliked: dict[str, set[str]] = defaultdict(set)
        for row in future.itertuples(index=False):
            if row.rating >= 4:
                liked[row.user_id].add(row.item_id)
            elif row.rating <= 2:
                disliked[row.user_id].add(row.item_id)
        users = closed_loop_users(liked, set(past["user_id"]), config.users, config.seed)

        replayed_until: int | None = None
        if config.headline and frozen_server is not None:
            say("[5/6] headline: live vs frozen features, on the future of the other users")
            plot = settings.data_dir / "demo-live.png"
            headline = run_headline(
                settings,
                producer,
                dataset=config.dataset,
                ratings=data.ratings,
                cutoff_ms=cutoff,
                catalogue={m.key.decode() for m in catalog_messages},
                loop_users=users,
                live_address=server.address,
                frozen_address=frozen_server.address,
                events_per_user=config.headline_events_per_user,
                max_seconds=config.headline_max_seconds,
                plot=plot,
                seed=config.seed,
                say=say,
            )
            replayed_until = headline.replayed_until_ms
            say(headline.line)
            say(headline.details)
            say(f"      plot {plot} (figures: {plot.with_suffix('.json').name})")
            app.refresh()  # the replayed users and items, before the loop's first round
        else:
            say("[5/6] headline skipped (--no-headline)")
        phases.done("headline")

        clock = loop_start_ms(cutoff, replayed_until)
        say(
            f"[6/6] closed loop: {len(users)} users × {config.rounds} rounds, k={config.k}, from "
            f"event time {pd.Timestamp(clock, unit='ms'):%Y-%m-%d %H:%M}"
        )
        injected_at_ms: int | None = None
        reports: list[RoundReport] = []
        shown_before: dict[str, set[str]] = {}
        feedback_producer = producer_for(settings, **{"linger.ms": 5})
        example_shown = False
        with RecommenderClient(server.address, timeout_s=5) as client:
            for round_no in range(1, config.rounds + 1):
                report = RoundReport(round_no, 0, 0, 0, 0, 0)
                at_ms = clock + round_no * 3_600_000
                serving_clock.now_ms = at_ms
                broken = round_no == config.drift_round
                if broken:
                    injected_at_ms = at_ms
                    say(
                        f"      [drift injected] round {round_no}: a broken client dismisses every"
                        " item it shows"
                    )
                for user in users:
                    started = time.perf_counter()
                    slate = client.recommend(user, config.k, context={"surface": "demo"})
                    report.latencies_ms.append((time.perf_counter() - started) * 1000)
                    items = [i.item_id for i in slate.items]
                    report.slates += 1
                    report.models.add(slate.model_version)
                    report.fallbacks += slate.fallback
                    report.new_items += len(set(items) - shown_before.get(user, set()))
                    shown_before[user] = set(items)
                    events, hits, dismissals = feedback_events(
                        user, items, slate.request_id, liked[user], disliked[user], at_ms, broken
                    )
                    report.hits += hits
                    report.dismissals += dismissals
                    fresh = [i for i in slate.items if i.item_id in new_ids]
                    report.new_title_slots += len(fresh)
                    report.new_title_hits += len({i.item_id for i in fresh} & liked[user])
                    if fresh and not example_shown:
                        example_shown = True
                        title = new_ids[fresh[0].item_id]
                        say(
                            f"      user {user} gets the new {title!r} "
                            f"[{fresh[0].source}] {fresh[0].explanation}"
                        )
                    for event in events:
                        feedback_producer.produce(
                            topics.events, key=user.encode(), value=encode(event)
                        )
                    if round_no == 1 and user == users[0]:
                        say(f"      user {user}, round 1 (model {slate.model_version}):")
                        for item in slate.items[:5]:
                            title = app.pipeline.retrieval.catalog.get(item.item_id)
                            say(
                                f"        {title.title if title else item.item_id:<50} [{item.source}] {item.explanation}"
                            )
                feedback_producer.flush(30)
                wait_until_caught_up(settings, 300)
                app.refresh()
                reports.append(report)
                p50, p99 = np.percentile(report.latencies_ms, [50, 99])
                say(
                    f"      round {round_no} (model {', '.join(sorted(report.models))}): "
                    f"hits/slate {report.hit_rate:.2f}, dismissals {report.dismissals}, "
                    f"changed items/slate {report.new_items / report.slates:.1f}, "
                    f"new-title slots {report.new_title_slots} (liked {report.new_title_hits}), "
                    f"fallbacks {report.fallbacks}, gRPC p50 {p50:.1f} ms p99 {p99:.1f} ms"
                )
                if round_no == config.new_items_after and round_no < config.rounds and titles:
                    publish_new_titles(settings, app, titles, at_ms + 1_800_000, say)
                if round_no == config.retrain_after and round_no < config.rounds:
                    retrain_from_log(settings, app, index, config, catalog, encoder, say)
        phases.done("loop")
        report_drift(dashboard, injected_at_ms, say)
        counters = worker_counters(worker_port)
        if counters is None:
            say("      the worker's metrics did not answer")
        else:
            say(
                f"      events the worker counted late (beyond the allowed lateness): "
                f"{counters['late']}; reward attribution decided {counters['decided']:,} shown "
                f"slots, {counters['rewarded']:,} of them clicked (the exploration posteriors "
                "learn from these)"
            )
        say(f"      {phases.summary()}")
        if config.hold:
            input(f"      the operator page stays up at {dashboard.url}: press Enter to stop ")
        return reports
    finally:
        dashboard.stop()
        for running in (frozen_server, server):
            if running is not None:
                running.stop(1)
        for built in (frozen_app, app):  # both close the shared index: after the last request
            if built is not None:
                built.close()
        worker.terminate()
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()
        milvus.close()
