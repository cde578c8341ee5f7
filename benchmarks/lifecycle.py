"""``aether bench lifecycle``: a running system that changes — new items reach requests, and a model
retrained from the system's own log is swapped in under load (issue 17, docs/lifecycle.md).

On the embedded stack (the configured broker if it answers, else a Tansu of its own; the
configured Redis; a Milvus Lite file of its own), with the real ``aether worker`` and ``aether
serve`` as child processes, in the README's order:

1. ``aether replay --dataset ml-latest-small`` (``--replay-limit``), drained by the worker, whose
   catalogue agent embeds only titles published after the replay
   (``AETHER_STREAM__EMBED_CATALOGUE_FROM_MS``: embedding the 9,742 replayed titles is not what
   is measured); then ``aether index --dataset ml-latest-small`` over the same ratings (release
   1, retrieval only) and ``aether serve --refresh-s``.
2. **New items**: ``--items`` items published on ``<ns>.items`` every ``--interval-s``; each is
   timed from just before it is produced to the first answer that holds it
   (``benchmarks.lifecycle_probes.ReceivableProbe``): ``new_item_recommendable_p50_s``/``_p99_s``;
   and to the first time the worker's stores hold it (``StoreProbe``: the content row in Milvus,
   ``new_item_content_row_*``, the online row in Redis, ``new_item_online_row_*``, the first of
   the two, ``new_item_in_store_*``). Serving's refresh passes meanwhile, from its ``/metrics``:
   ``serve_refresh_*`` (``refresh_figures``).
3. **Swap**: a load generator sends ``--rps`` requests per second (``SwapLoad``) while ``aether
   train --from-log --promote`` trains the ranker on the worker's offline log and promotes it
   (``train_from_log_s``: that command's wall time); the load goes on until ``--swap-requests``
   answers in all and ``--after-swap`` of them from the new release. Every answer is checked
   against the release it names (``mixed_responses``): ``swap_requests``, ``swap_errors``,
   ``swap_mixed_version_responses``, ``swap_p99_ms``, ``swap_rps`` (what was reached).

The server runs as ``--serve-processes`` processes (default 2, ``serving.processes``: one per
core; each swaps on its own, and each answer is checked against the release it names), with no
exploration slots (a response's scores are then its release's alone) and a 3 s request budget
(``AETHER_SERVING__DEADLINE_MS``), as the lifecycle tests do. The refresh figures are the first
server process's (``/metrics`` on ``--metrics-port``; process ``i`` exports on that port + ``i``).
Figures, with the command that produced them: ``docs/benchmarks/lifecycle.md``.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from features.rows import UserFeatureRow

DATASET = "ml-latest-small"
DAY_MS = 86_400_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--data", default=None, help="ml-latest-small folder (default: shipped)")
    parser.add_argument(
        "--replay-limit", type=int, default=None, help="first N ratings only (default: all)"
    )
    parser.add_argument("--items", type=int, default=200, help="new items to publish")
    parser.add_argument("--interval-s", type=float, default=0.25, help="between new items")
    parser.add_argument("--refresh-s", type=float, default=1.0, help="aether serve --refresh-s")
    parser.add_argument("--rps", type=float, default=100.0, help="offered load during the swap")
    parser.add_argument(
        "--serve-processes",
        type=int,
        default=2,
        help="aether serve's processes (serving.processes): one Python process is bound to about "
        "one core by its GIL; two are the deployment for two cores",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=32,
        help="load generator threads (enough for --rps at ~300 ms)",
    )
    parser.add_argument("--swap-requests", type=int, default=1000, help="answers, at least")
    parser.add_argument(
        "--after-swap", type=int, default=300, help="answers of the new release, at least"
    )
    parser.add_argument("--epochs", type=int, default=3, help="aether train --epochs")
    parser.add_argument(
        "--trainer-nice",
        type=int,
        default=19,
        help="CPU priority of the retraining (nice; 0: as serving's): a batch job, on a machine "
        "it shares with the server it must not starve",
    )
    parser.add_argument(
        "--trainer-threads", type=int, default=1, help="aether train --threads (torch)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder")


SWAP_NEIGHBOURHOOD_S = 5.0  # errors this close to the swap are counted apart (``_error_timing``)


def command(args: argparse.Namespace) -> int:
    from benchmarks.machine import machine_description
    from benchmarks.output import print_figures, write_json

    machine = machine_description()
    print(f"machine: {machine}")
    work = Path(tempfile.mkdtemp(prefix="aether-bench-lifecycle-"))
    try:
        figures = run(args, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    figures["machine"] = machine
    print_figures(figures)
    write_json(args.json, figures)
    return 0


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from core.settings import Settings, load_settings
    from core.subprocesses import free_loopback_port, stop_process
    from stack.redis_server import delete_namespace_keys
    from stack.tansu import kafka_answers, start_tansu

    base = load_settings()
    bootstrap, tansu_pid = base.kafka.bootstrap_servers, None
    if not kafka_answers(bootstrap):
        port = free_loopback_port()
        tansu_pid = start_tansu(port, work / "tansu.log")
        bootstrap = f"127.0.0.1:{port}"
    overrides: dict[str, Any] = {  # the environment's names (aliases) for the three stores
        "namespace": f"bench{uuid.uuid4().hex[:8]}",
        "data_dir": work / ".aether",
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "REDIS_URL": base.redis.url.get_secret_value(),
        "MILVUS_URI": str(work / "milvus.db"),
    }
    settings = Settings(**overrides)
    try:
        return Lifecycle(args, settings, work).run()
    finally:
        redis = settings.redis
        delete_namespace_keys(
            redis.url.get_secret_value(), settings.namespace, cluster=redis.cluster
        )
        if tansu_pid is not None:
            stop_process(tansu_pid)


class Lifecycle:
    """The three phases of the module docstring, with the processes they start."""

    def __init__(self, args: argparse.Namespace, settings: Any, work: Path) -> None:
        self.args = args
        self.settings = settings
        self.work = work
        self.processes: list[Any] = []
        self.metrics_port = 0  # aether serve's /metrics, once it runs

    def run(self) -> dict[str, Any]:
        try:
            address = self.start_system()
            figures = self.new_items(address)
            figures.update(self.swap(address))
            return figures
        finally:
            for process in reversed(self.processes):
                process.stop()

    # -- 1. the system ------------------------------------------------------------------------
    def start_system(self) -> str:
        from benchmarks.lifecycle_processes import AetherProcess, start_worker
        from core.subprocesses import free_loopback_port
        from features.store import apply_repo
        from streams.progress import wait_until_caught_up
        from streams.topics import ensure_topics

        settings, work = self.settings, self.work
        ensure_topics(settings)
        apply_repo(settings.redis, settings.deployment)
        replay = ["replay", "--dataset", DATASET, *self._data()]
        if self.args.replay_limit:
            replay += ["--limit", str(self.args.replay_limit)]
        started = time.perf_counter()
        self.aether(*replay)
        # One worker for the whole run; its catalogue agent embeds only the titles published
        # after the replay (the replayed catalogue's 9,742 would take minutes of MiniLM CPU).
        worker = start_worker(
            settings,
            work / "worker.log",
            embed_catalogue=True,
            env={"AETHER_STREAM__EMBED_CATALOGUE_FROM_MS": str(self.new_items_from_ms())},
        )
        self.processes.append(worker)
        wait_until_caught_up(settings, 300)
        print(f"replayed and drained in {time.perf_counter() - started:.0f} s")
        started = time.perf_counter()
        index = ["index", "--dataset", DATASET, *self._data(), "--content-map-items", "500"]
        if self.args.replay_limit:  # index what was replayed
            index += ["--limit", str(self.args.replay_limit)]
        self.aether(*index)
        print(f"aether index in {time.perf_counter() - started:.0f} s (release 1)")
        port = free_loopback_port()
        self.metrics_port = free_loopback_port()
        serve = AetherProcess.start(
            settings,
            work / "serve.log",
            "serve",
            "--port",
            str(port),
            "--metrics-port",
            str(self.metrics_port),
            "--refresh-s",
            str(self.args.refresh_s),
            env={
                "AETHER_SERVING__DEADLINE_MS": "3000",
                "AETHER_BANDIT__EXPLORATION_SLOTS": "0",
                "AETHER_SERVING__PROCESSES": str(self.args.serve_processes),
            },
        )
        self.processes.append(serve)
        serve.wait_for_log("serving aetherrec.v1.Recommender", timeout_s=600)
        return f"127.0.0.1:{port}"

    # -- 2. new items ---------------------------------------------------------------------------
    def new_items(self, address: str) -> dict[str, Any]:
        import orjson

        from benchmarks.lifecycle_probes import (
            ReceivableProbe,
            StoreProbe,
            new_item_category,
            percentile,
            refresh_figures,
        )
        from benchmarks.lifecycle_processes import scrape_metrics, store_lookups
        from serving.client import RecommenderClient
        from streams.publish import producer_for

        data = self.movielens
        t0 = self.new_items_from_ms()
        titles = data.items.sample(n=self.args.items, random_state=0, replace=True)
        producer = producer_for(self.settings)
        done = threading.Event()
        metrics_before = scrape_metrics(self.metrics_port)
        stop_stores = threading.Event()
        with (
            RecommenderClient(address, timeout_s=10.0) as client,
            store_lookups(self.settings) as lookups,
        ):
            probe = ReceivableProbe(client.recommend)
            stores = StoreProbe(probe.published, lookups)
            stores_thread = threading.Thread(
                target=_repeat, args=(stores.round, stop_stores), name="store-probe", daemon=True
            )
            stores_thread.start()

            def publish() -> None:
                for n, row in enumerate(titles.itertuples(index=False)):
                    item_id = f"bench-new-{n}"
                    body = {
                        "event_id": f"{item_id}@{t0 + n}",
                        "item_id": item_id,
                        "title": f"{row.title} II",
                        "categories": [new_item_category(n), *row.categories[:3]],
                        "event_time": t0 + 1_000 * n,
                    }
                    probe.publish(item_id, n)
                    producer.produce(
                        self.settings.topic("items"), key=item_id, value=orjson.dumps(body)
                    )
                    producer.flush(10)
                    time.sleep(self.args.interval_s)
                done.set()

            publisher = threading.Thread(target=publish, name="new-items", daemon=True)
            publisher.start()
            deadline = None
            while True:
                probe.round()
                if done.is_set():
                    deadline = deadline or time.monotonic() + 120
                    if not probe.pending() or time.monotonic() > deadline:
                        break
                time.sleep(0.05)
            publisher.join()
            stop_stores.set()
            stores_thread.join(30)
        latencies = list(probe.receivable_s.values())
        print(
            f"new items: {len(latencies)}/{len(probe.published)} receivable, "
            f"{len(probe.round_s)} probe rounds, {probe.errors} failed probes"
        )
        in_store = stores.first_found_s()
        after_store = [s - in_store[i] for i, s in probe.receivable_s.items() if i in in_store]
        store_figures: dict[str, Any] = {"new_item_store_probe_errors": stores.errors}
        for store, found in [("in_store", in_store), *sorted(stores.found_s.items())]:
            store_figures[f"new_item_{store}_found"] = len(found)
            store_figures[f"new_item_{store}_p50_s"] = percentile(list(found.values()), 50)
            store_figures[f"new_item_{store}_p99_s"] = percentile(list(found.values()), 99)
        return {
            "new_items_published": len(probe.published),
            "new_items_recommendable": len(latencies),
            "new_item_recommendable_p50_s": percentile(latencies, 50),
            "new_item_recommendable_p99_s": percentile(latencies, 99),
            "new_item_recommendable_max_s": max(latencies, default=float("nan")),
            "new_item_probe_errors": probe.errors,
            "new_item_probe_round_p50_s": percentile(probe.round_s, 50),
            "new_item_probe_round_p99_s": percentile(probe.round_s, 99),
            **store_figures,
            # per item: from the first store holding it to the first answer holding it
            "new_item_store_to_recommendable_p50_s": percentile(after_store, 50),
            "new_item_store_to_recommendable_p99_s": percentile(after_store, 99),
            **refresh_figures(metrics_before, scrape_metrics(self.metrics_port)),
        }

    # -- 3. retrain from the log, promote under load --------------------------------------------
    def swap(self, address: str) -> dict[str, Any]:
        from benchmarks.lifecycle_probes import SwapLoad, mixed_responses, percentile
        from ranker.scoring import SASRecRanker
        from serving.client import RecommenderClient
        from serving.pipeline import model_history

        rows = self._user_rows(64)
        users = sorted(rows)
        with RecommenderClient(address, timeout_s=10.0) as client:
            old_label = client.recommend(users[0], 10).model_version
        load = SwapLoad(  # a connection per thread: the server's processes share connections out
            lambda: RecommenderClient(address, timeout_s=10.0, own_connection=True),
            users,
            self.args.rps,
            self.args.threads,
        )
        checkpoint = self.work / "ranker-from-log.pt"
        load.start()
        started = time.monotonic()
        try:
            _wait(lambda: load.count() >= 100, 120, "the load generator's first answers")
            trained_at = time.perf_counter()
            output = self.aether(
                "train", "--from-log", "--promote", "--epochs", str(self.args.epochs),
                "--threads", str(self.args.trainer_threads), "--out", str(checkpoint),
                nice=self.args.trainer_nice,
            )  # fmt: skip
            train_from_log_s = time.perf_counter() - trained_at
            trained = json.loads(output.strip().splitlines()[-1])
            new_label = str(trained["release"])
            _wait(
                lambda: (
                    load.count(new_label) >= self.args.after_swap
                    and load.count() >= self.args.swap_requests
                ),
                900,
                f"{self.args.after_swap} answers of {new_label}",
            )
        finally:
            load.stop()
        window_s = time.monotonic() - started
        answers = load.answers
        ranker = SASRecRanker.from_checkpoint(checkpoint)
        # Each user's history as the server feeds this model (``serving.pipeline.model_history``).
        histories = {user: model_history(ranker, row) for user, row in rows.items()}
        mixed = mixed_responses(answers, old_label, new_label, _Scorer(ranker), histories)
        errors = [a for a in answers if a.label is None]
        labels = sorted({a.label for a in answers if a.label})
        print(f"swap: {old_label} -> {new_label}; labels seen {labels}")
        if errors:
            print(f"first errors: {[a.error for a in errors[:3]]}")
        return {
            "train_from_log_s": train_from_log_s,
            "train_from_log_best_epoch": trained.get("best_epoch"),
            "train_from_log_val_ndcg10": trained.get("val_ndcg10"),
            "swap_requests": len(answers),
            "swap_errors": len(errors),
            # the server's own load shedding (its concurrent-RPC limit), whatever the release
            "swap_errors_shed": sum("RESOURCE_EXHAUSTED" in a.error for a in errors),
            "swap_mixed_version_responses": len(mixed),
            "swap_new_release_responses": sum(a.label == new_label for a in answers),
            "swap_fallback_responses": sum(a.fallback for a in answers),
            "swap_p50_ms": percentile([a.latency_ms for a in answers], 50),
            "swap_p99_ms": percentile([a.latency_ms for a in answers], 99),
            "swap_rps": len(answers) / window_s,
            "swap_rps_offered": self.args.rps,
            "trainer_nice": self.args.trainer_nice,
            "trainer_threads": self.args.trainer_threads,
            "serve_processes": self.args.serve_processes,
            "swap_old_release": old_label,
            "swap_new_release": new_label,
            **_error_timing(answers, new_label, started),
        }

    @functools.cached_property
    def movielens(self) -> Any:
        from interactions.movielens import load_movielens

        return load_movielens(DATASET, self.args.data)

    def new_items_from_ms(self) -> int:
        """Event time of the first new title: a day after every replayed update."""
        return int(self.movielens.ratings["timestamp_ms"].max()) + DAY_MS

    def _user_rows(self, count: int) -> dict[str, UserFeatureRow]:
        """Some replayed users with a history: their online rows, as the server reads them."""
        from features.offline import OfflineEventLog
        from features.store import FeastOnlineStore

        events = OfflineEventLog(self.settings.deployment).read()
        candidates = sorted(set(events["user_id"]))[: count * 2]
        store = FeastOnlineStore(self.settings.redis, self.settings.deployment)
        try:
            rows = store.read_users(candidates)
        finally:
            store.close()
        found = {u: r for u, r in rows.items() if r.recent_items}
        return dict(sorted(found.items())[:count])

    # -- helpers -------------------------------------------------------------------------------
    def _data(self) -> list[str]:
        return ["--data", self.args.data] if self.args.data else []

    def aether(self, *argv: str, nice: int = 0) -> str:
        """``aether *argv`` to its end, ``nice`` added to its CPU niceness."""
        import subprocess

        from benchmarks.lifecycle_processes import AETHER
        from benchmarks.serve_server import child_env

        niced = (
            ["nice", "-n", str(nice)] if nice else []
        )  # coreutils: no preexec in a threaded parent
        done = subprocess.run(
            [*niced, AETHER, *argv], env=child_env(self.settings), capture_output=True, text=True
        )
        if done.returncode != 0:
            raise RuntimeError(f"aether {' '.join(argv)}: {done.stdout}{done.stderr}")
        return done.stdout


def _error_timing(answers: Any, new_label: str, started: float) -> dict[str, Any]:
    """When the failed calls were sent, in seconds from the load's start, against the first
    answer of the new release (the swap): whether they cluster around it or not."""
    sent = sorted(a.sent_s - started for a in answers if a.label is None)
    first_new = min((a.sent_s - started for a in answers if a.label == new_label), default=None)
    near = (
        sum(abs(t - first_new) <= SWAP_NEIGHBOURHOOD_S for t in sent)
        if first_new is not None
        else None
    )
    return {
        "swap_first_new_release_answer_s": first_new,
        "swap_errors_first_s": sent[0] if sent else None,
        "swap_errors_last_s": sent[-1] if sent else None,
        f"swap_errors_within_{SWAP_NEIGHBOURHOOD_S:.0f}s_of_swap": near,
    }


class _Scorer:
    def __init__(self, ranker: Any) -> None:
        self._ranker = ranker
        self.vocabulary = frozenset(ranker.vocabulary.item_ids)

    def score(self, history: Any, items: Any) -> Any:
        return self._ranker.score(history, items)


def _repeat(step: Any, until: threading.Event, pause_s: float = 0.05) -> None:
    """``step()`` again and again, ``pause_s`` apart, until ``until`` is set and once more."""
    while not until.is_set():
        step()
        time.sleep(pause_s)
    step()


def _wait(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.2)
