"""``aether bench ingest``: end-to-end ingest throughput and feature freshness of the stream worker.

Replays MovieLens (ML-1M by default, ``interactions.replay`` mapping) through the real broker and
``--workers`` worker processes (``aether worker``, Feast/Redis online store), in two phases:

0. For scale, the pure handlers (decode + user and item state machines, ``streams.testing``) are
   timed in process over the same events: the ceiling without broker, Faust and stores.
1. **Throughput** — the first ``--limit`` ratings' events are produced as fast as possible; the
   sustained rate is ``events / (time the last item update was applied − time of the first
   produce)``, read from the workers' Prometheus counters. Every event is then in the user *and*
   item features (item updates are the second hop, so this is end to end).
2. **Freshness** — at each offered rate (fractions of the sustained rate, ``--rates``) the replay
   continues, paced, for ``--seconds``, as live traffic (each event stamped with the wall clock
   as it is produced); meanwhile a probe produces one event for a fresh user every
   20 ms, on schedule (open loop: ``FreshnessProbe``), and polls the online store until each
   user's row is visible: produce → visible latency.

Throughput on a shared machine moves with its other load, so phase 1 also reports the workers'
CPU seconds (``process_cpu_seconds_total``) and events per worker CPU second, which move less,
and the load average.

``--json PATH`` writes one flat object: ``events_per_s``, ``worker_cpu_s``,
``events_per_worker_cpu_s``, ``batches_<agent>``, ``stage_cpu_us_per_event_<stage>`` (phase 1's
worker CPU per event in each stage of ``streams.worker_metrics.STAGES``, from
``aether_stream_stage_cpu_seconds``, and ``_rest``: Faust's consumption, the event loop and the
metrics), ``redis_cpu_us_per_event`` and, when the benchmark started the broker itself,
``broker_cpu_us_per_event`` (those services' CPU per event over phase 1,
``benchmarks.machine.ServiceCpu``: what else each event costs a machine they share),
``load_average``, ``freshness_p50_ms``/``freshness_p99_ms`` (at half the sustained rate),
``offered_rates``, per-rate ``freshness_p50_ms_at_<rate>``, ``freshness_p99_ms_at_<rate>``,
``freshness_probes_at_<rate>`` and ``freshness_lost_probes_at_<rate>`` (not visible within 10 s),
``late_events_at_<rate>`` (events the workers judged late in that phase),
``worker_cpu_us_per_event_at_<rate>`` (the workers' CPU over that phase per event produced in it,
probes included) and its split, ``stage_cpu_us_per_event_<stage>_at_<rate>``,
``batches_<agent>_at_<rate>``, the workers' full collector passes over both phases
(``gc_full_passes``, ``gc_full_pause_mean_ms``, ``gc_full_passes_over_30ms``), the offline logs'
live files, bytes and appended batches at the end (``offline_log_files``/``_bytes``/``_batches``
for the event log, ``offline_impressions_…``, ``feature_history_…``; ``offline_log_figures``) and
``machine``. Uses ``KAFKA_BOOTSTRAP_SERVERS`` if it answers, else starts an in-memory Tansu. Its
work folder (the workers' and the broker's logs, the namespaces' offline logs) is removed after a
successful run; after a failure it is kept and its path printed.

3. **Scale-out** (``--scale-out``, the default with ``--workers 1``; ``benchmarks.ingest_scale_out``)
   — after phase 2 the workers stop, and the throughput phase's events go, in a fresh namespace,
   through two worker processes in one consumer group: ``events_per_s_2workers`` (with
   ``worker_cpu_s_2workers``, ``events_per_worker_cpu_s_2workers``, ``batches_<agent>_2workers``
   the split ``stage_cpu_us_per_event_<stage>_2workers`` and the services'
   ``redis_cpu_us_per_event_2workers``, ``broker_…``). Then every output of the
   two namespaces for those events (Feast rows of their users and items, item transitions, bandit
   posteriors; ``stack.namespace_outputs``) must be equal: ``scale_out_state_equal`` (the command
   exits 1 when not), ``scale_out_differing_outputs`` and the sizes compared
   (``scale_out_user_rows``, ``_item_rows``, ``_transitions``, ``_posterior_entries``;
   ``scale_out_capped_anchors``: anchors at the transition store's neighbour cap, whose
   order-dependent tails are not compared, their totals are) and
   ``scale_out_busiest_worker_share``: the share of the events the busier worker decided (their
   users' partitions decide it), which bounds the speed-up at its inverse.
   **Pairs** (``--pairs N``, default 3): the speed-up of one pair of runs moves with whatever
   else the machine does at those moments (on a shared two-core VM, 1.3× to 1.9× for the same
   code), so ``N − 1`` more pairs follow, each a one-worker then a two-worker run in fresh
   namespaces, both runs' states compared too: ``scale_out_speedups`` (each pair's two-worker
   rate over its one-worker rate; the first pair is phase 1 and the run above) and
   ``scale_out_speedup_median``.
   ``--slate-every N`` adds one serving-style slate per N views to both throughput runs
   (``slates`` in the JSON), so attribution and the posteriors have work; the default is none.

4. **Faust's floor in the same run** (``--floor``, the default) — last, the throughput phase's
   events go, in a fresh namespace, through one worker that only consumes ``<ns>.events`` in
   batches and counts (``aether worker --faust-floor``): Faust's own cost per event on this
   machine now, the ceiling for the real agents. ``faust_floor_events_per_s``,
   ``faust_floor_events_per_worker_cpu_s`` and ``share_of_faust_floor`` (the full worker's events
   per CPU second over the floor's): a figure that moves less from machine to machine than either.

``--faust-floor`` instead runs only such workers (``--workers`` of them) and reports their figures.
"""

from __future__ import annotations

import argparse
import itertools
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from benchmarks.machine import ServiceCpu, machine_description
from core.settings import Settings, load_settings

if TYPE_CHECKING:
    from streams.progress import StepProgress
    from streams.topics import TopicNames

ROOT = Path(__file__).resolve().parents[2]


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="ml-1m", choices=("ml-latest-small", "ml-1m"))
    parser.add_argument("--data", help="dataset folder (default ../shared/datasets/ml-1m)")
    parser.add_argument("--limit", type=int, default=100_000, help="events in the throughput phase")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (one group)")
    parser.add_argument("--rates", default="0.25,0.5,0.75", help="offered rates, × sustained")
    parser.add_argument("--seconds", type=float, default=8.0, help="duration of each rate")
    parser.add_argument("--json", help="write the figures here as one flat JSON object")
    parser.add_argument(
        "--slate-every",
        type=int,
        default=0,
        help="with the throughput events, one serving-style slate per this many views (0: none)",
    )
    parser.add_argument(
        "--scale-out",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run the throughput events through two workers and compare their state",
    )
    parser.add_argument(
        "--pairs",
        type=_at_least_one,
        default=3,
        help="pairs of one- and two-worker runs the scale-out speed-up is the median of",
    )
    parser.add_argument(
        "--floor",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="end with Faust's floor (a worker that only consumes and counts) on the same events",
    )
    parser.add_argument(
        "--faust-floor",
        action="store_true",
        help="throughput of a worker that only consumes and counts (aether worker --faust-floor)",
    )


# -- the machine ----------------------------------------------------------------------------------
def fresh_settings(overrides: dict[str, Any], data_dir: Path) -> Settings:
    """``overrides`` in a namespace of their own (``bench<hex>``), state under ``data_dir``."""
    return Settings(
        **{**overrides, "namespace": f"bench{uuid.uuid4().hex[:8]}", "data_dir": data_dir}
    )


def start_workers(
    settings: Settings, count: int, log_dir: Path, extra: tuple[str, ...] = ()
) -> list[tuple[subprocess.Popen[bytes], int]]:
    from core.subprocesses import free_loopback_port

    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "REDIS_URL": settings.redis.url.get_secret_value(),
        "AETHER_NAMESPACE": settings.namespace,
        "AETHER_DATA_DIR": str(settings.data_dir),
        # Attribution's idleness rule decides by wall time (an input silent for 30 s stops
        # holding its partition back), so with it on, which rewards are decided depends on how
        # fast the machine is: off, the outputs depend on the events alone, and the scale-out
        # phase can require two workers to reach one worker's state (its cost is one clock read
        # per batch, so the figures do not move).
        "AETHER_STREAM__IDLE_PARTITION_TIMEOUT_S": "0",
    }
    workers = []
    for n in range(count):
        port = free_loopback_port()
        log = (log_dir / f"worker-{n}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "aether.cli.worker", "--metrics-port", str(port), *extra],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        workers.append((process, port))
    return workers


def stop_workers(workers: list[tuple[subprocess.Popen[bytes], int]]) -> None:
    """Terminate the workers (kill what does not stop within 20 s) and forget them."""
    for process, _ in workers:
        process.terminate()
    for process, _ in workers:
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
    workers.clear()


def warm_up(settings: Settings, ports: list[int], event_time_ms: int) -> None:
    """Probe until every worker serves metrics and has applied events of its own partitions:
    the group has joined and shared the partitions out, so no rebalance falls in the phases."""
    topic = settings.topic("events")
    # Probes go out once every worker is up, a few per second, each polled for every 50 ms: at
    # the freshness phase's pace (50 a second, polled every millisecond) the probes outstanding
    # while the workers start up and join were read in one call a millisecond, which kept
    # Redis busy (hundreds of users a read) beside the workers' start.
    _wait(lambda: all(_scrape(port) for port in ports), 180, "workers to serve metrics")
    probe = FreshnessProbe(settings, lambda: event_time_ms, interval_s=0.2, poll_s=0.05)
    probe.start()

    def joined() -> bool:
        own = [outcome_counts([port]).get((topic, "applied"), 0) for port in ports]
        return bool(probe.latencies_ms) and all(own)

    try:
        _wait(joined, 180, "workers to join and process")
    finally:
        probe.stop_flag.set()
        probe.join()


_SAMPLE = re.compile(r"^aether_stream_events_total\{([^}]*)\}\s+([0-9.e+]+)$", re.M)
_BATCHES = re.compile(r'^aether_stream_batch_seconds_count\{agent="([^"]*)"\}\s+([0-9.e+]+)$', re.M)
_CPU = re.compile(r"^process_cpu_seconds_total\s+([0-9.e+]+)$", re.M)
_STAGE_CPU = re.compile(
    r'^aether_stream_stage_cpu_seconds_total\{stage="([^"]*)"\}\s+([0-9.e+]+)$', re.M
)


def _scrape(port: int) -> str:
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        return str(urllib.request.urlopen(url, timeout=2).read().decode())
    except OSError:
        return ""  # not serving yet


def worker_usage(ports: list[int]) -> tuple[float, dict[str, int]]:
    """CPU seconds used so far by the workers (summed) and batches handled, by agent."""
    cpu = 0.0
    batches: dict[str, int] = {}
    for port in ports:
        text = _scrape(port)
        cpu += sum(float(v) for v in _CPU.findall(text))
        for agent, value in _BATCHES.findall(text):
            batches[agent] = batches.get(agent, 0) + int(float(value))
    return cpu, batches


def stage_cpu_seconds(ports: list[int]) -> dict[str, float]:
    """CPU seconds used so far in each stage of batch handling (``aether_stream_stage_cpu_seconds``,
    ``streams.worker_metrics.STAGES``), summed over the workers."""
    stages: dict[str, float] = {}
    for port in ports:
        for stage, value in _STAGE_CPU.findall(_scrape(port)):
            stages[stage] = stages.get(stage, 0.0) + float(value)
    return stages


def services_line(services_us: dict[str, float], worker_us: float) -> str:
    """What one event cost the machine: the workers' CPU and each service's (``ServiceCpu``)."""
    parts = [f"workers {worker_us:.1f}"] + [f"{name} {us:.1f}" for name, us in services_us.items()]
    total = worker_us + sum(services_us.values())
    return f"machine CPU per event (µs): {', '.join(parts)}; {total:.1f} in all"


def stage_split(
    before: dict[str, float], after: dict[str, float], cpu_s: float, events: int
) -> dict[str, float]:
    """µs of worker CPU per event in each stage between two readings, and ``rest``: the process's
    CPU outside every stage (Faust's consumption, the event loop, metrics)."""
    split = {
        stage: 1e6 * (after.get(stage, 0.0) - before.get(stage, 0.0)) / max(events, 1)
        for stage in sorted(after)
    }
    split["rest"] = 1e6 * cpu_s / max(events, 1) - sum(split.values())
    return split


_GC_FULL = re.compile(
    r'^aether_gc_pause_seconds_(count|sum|bucket)\{generation="2"(?:,le="([^"]+)")?\}\s+([0-9.e+]+)$',
    re.M,
)
FULL_PASS_STALL_S = 0.03


def full_collections(ports: list[int]) -> tuple[float, float, float]:
    """The workers' full (generation 2) collector passes so far: count, seconds in them, and how
    many took longer than ``FULL_PASS_STALL_S`` (``streams.worker_metrics.GC_PAUSES``)."""
    count = seconds = quick = 0.0
    for port in ports:
        for kind, le, value in _GC_FULL.findall(_scrape(port)):
            if kind == "count":
                count += float(value)
            elif kind == "sum":
                seconds += float(value)
            elif le and float(le) == FULL_PASS_STALL_S:
                quick += float(value)
    return count, seconds, count - quick


def outcome_counts(ports: list[int]) -> dict[tuple[str, str], int]:
    """Sum over workers of ``aether_stream_events_total`` by (topic, outcome)."""
    totals: dict[tuple[str, str], float] = {}
    for port in ports:
        text = _scrape(port)
        for labels, value in _SAMPLE.findall(text):
            fields = dict(re.findall(r'(\w+)="([^"]*)"', labels))
            key = (fields.get("topic", ""), fields.get("outcome", ""))
            totals[key] = totals.get(key, 0.0) + float(value)
    return {key: int(value) for key, value in totals.items()}


def events_decided(ports: list[int], events_topic: str) -> int:
    """Source events the workers' metrics count as decided (applied, duplicate, late, …)."""
    counts = outcome_counts(ports)
    return sum(n for (topic, _), n in counts.items() if topic == events_topic)


def consumed(ports: list[int], events_topic: str, expected_events: int) -> bool:
    """True once the workers have decided ``expected_events`` source events (the floor worker,
    which has no state store to ask: ``wait_applied``)."""
    return events_decided(ports, events_topic) >= expected_events


@dataclass(frozen=True)
class Throughput:
    """One throughput measurement (:func:`measure_throughput`)."""

    events: int
    elapsed_s: float  # from the first produce until every event's features were written
    produced_s: float  # of which producing
    cpu_s: float  # the workers' CPU over it
    batches: dict[str, int]  # by agent
    stages: dict[str, float]  # µs of worker CPU per event by stage (``stage_split``)
    shares: list[float]  # of the events, decided by each worker
    services_us: dict[str, float]  # µs of Redis (and broker) CPU per event (``ServiceCpu``)

    @property
    def rate(self) -> float:
        """Events per second, end to end."""
        return self.events / self.elapsed_s

    @property
    def events_per_cpu_s(self) -> float:
        """Events per second of the workers' CPU."""
        return self.events / max(self.cpu_s, 1e-9)

    @property
    def cpu_us_per_event(self) -> float:
        """µs of the workers' CPU per event."""
        return 1e6 * self.cpu_s / max(self.events, 1)


def measure_throughput(
    ports: list[int],
    progress: StepProgress,
    topics: TopicNames,
    producer: Any,
    slates: list[Any],
    messages: list[Any],
    services: ServiceCpu,
    description: str,
) -> Throughput:
    """Produce ``slates``, then ``messages`` as fast as possible, and wait until the workers on
    ``ports`` have applied them (``wait_applied``): the throughput phase, and each run of the
    scale-out phase (``benchmarks.ingest_scale_out``)."""
    from streams.publish import publish

    cpu_before, batches_before = worker_usage(ports)
    stages_before = stage_cpu_seconds(ports)
    events_before = [events_decided([port], topics.events) for port in ports]
    services_before = services.read()
    publish(producer, topics.impressions, slates, total=len(slates), progress=False)
    started = time.perf_counter()
    publish(producer, topics.events, messages, total=len(messages), description=description)
    produced_s = time.perf_counter() - started
    wait_applied(progress, topics)
    elapsed_s = time.perf_counter() - started
    services_us = services.per_event_us(services_before, len(messages))
    cpu_after, batches_after = worker_usage(ports)
    cpu_s = cpu_after - cpu_before
    return Throughput(
        events=len(messages),
        elapsed_s=elapsed_s,
        produced_s=produced_s,
        cpu_s=cpu_s,
        batches=batches_since(batches_before, batches_after),
        stages=stage_split(stages_before, stage_cpu_seconds(ports), cpu_s, len(messages)),
        shares=[
            (events_decided([port], topics.events) - before) / len(messages)
            for port, before in zip(ports, events_before, strict=True)
        ],
        services_us=services_us,
    )


def batches_since(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Batches each agent handled between two ``worker_usage`` readings."""
    return {agent: n - before.get(agent, 0) for agent, n in sorted(after.items())}


def wait_applied(progress: StepProgress, topics: TopicNames, timeout_s: float = 1800) -> None:
    """Until every record on the events topic is through the interactions step and every item
    update it forwarded is through the item step: the features of the phase's events are
    written. Each step commits its consumed offsets with its state (``StepProgress``), so the
    wait ends within one poll of the last commit, and a poll is one Redis read: it costs the
    workers nothing, where scraping their metrics each time cost them CPU (and the benchmark
    more, parsing them: on a two-core machine that competes with the two workers)."""
    events = progress.ends(topics.events)
    _wait(lambda: not progress.behind("interactions", events), timeout_s, "the events", POLL_S)
    updates = progress.ends(topics.item_updates)
    _wait(
        lambda: not progress.behind("item_features", updates),
        timeout_s,
        "their item updates",
        POLL_S,
    )


# -- the probe -----------------------------------------------------------------------------------
class FreshnessProbe(threading.Thread):
    """Every ``interval_s``, produce an event for a fresh user, and poll the online store until
    each probe's feature row is visible: produce → visible latency, in ``latencies_ms``.

    Open loop: a probe goes out on schedule whether or not earlier ones are visible yet, so a
    stall delays every probe sent during it and the tail is sampled as often as the rest (a probe
    that waited for the previous one would send fewer during a stall, and report a lower p99).
    After ``stop_flag`` no probe is sent and the outstanding ones are waited for; a probe still
    not visible after ``timeout_s`` is counted in ``lost``."""

    def __init__(
        self,
        settings: Settings,
        event_time_ms: Callable[[], int],
        interval_s: float = 0.02,
        timeout_s: float = 10.0,
        poll_s: float = 0.001,
        *,
        store: Any = None,
        producer: Any = None,
    ) -> None:
        """``store``/``producer``: the online store and Kafka producer of ``settings`` unless
        given (``read_users``; ``produce`` and ``flush``)."""
        super().__init__(daemon=True)
        from features.store import FeastOnlineStore
        from streams.publish import make_producer

        self.settings = settings
        self.store = store or FeastOnlineStore(settings.redis, settings.deployment)
        self.producer = producer or make_producer(
            settings.kafka.bootstrap_servers, **{"linger.ms": 0}
        )
        self.event_time_ms = event_time_ms  # each probe's event time
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.poll_s = poll_s  # between two reads of the outstanding probes' rows
        self.latencies_ms: list[float] = []
        self.lost = 0
        self.stop_flag = threading.Event()

    def run(self) -> None:
        topic = self.settings.topic("events")
        sent_at: dict[str, float] = {}  # outstanding probes: user → produce time
        next_send = time.perf_counter()
        n = 0
        while sent_at or not self.stop_flag.is_set():
            now = time.perf_counter()
            if now >= next_send and not self.stop_flag.is_set():
                user = f"probe-{uuid.uuid4().hex[:10]}"
                body = {
                    "event_id": f"{user}:{n}",
                    "event_type": "view",
                    "user_id": user,
                    "item_id": "probe",
                    "event_time": self.event_time_ms(),
                }
                sent_at[user] = now
                self.producer.produce(topic, key=user.encode(), value=orjson.dumps(body))
                self.producer.flush(5)
                n += 1
                next_send = max(next_send + self.interval_s, now)  # no burst after a hiccup
            if sent_at:
                visible = self.store.read_users(list(sent_at))
                seen = time.perf_counter()
                for user in visible:
                    self.latencies_ms.append((seen - sent_at.pop(user)) * 1000)
                for user in [u for u, t in sent_at.items() if seen - t > self.timeout_s]:
                    del sent_at[user]
                    self.lost += 1
            time.sleep(self.poll_s)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# -- the benchmark ---------------------------------------------------------------------------------
def command(args: argparse.Namespace) -> int:
    from benchmarks.ingest_scale_out import scale_out, serving_slates, settled_outputs
    from core.subprocesses import free_loopback_port, stop_process
    from interactions.movielens import load_movielens
    from interactions.replay import rating_events
    from stack.redis_server import delete_namespace_keys
    from stack.tansu import kafka_answers, start_tansu
    from streams.progress import StepProgress
    from streams.publish import make_producer
    from streams.topics import ensure_topics

    work = Path(tempfile.mkdtemp(prefix="aether-bench-ingest-"))
    tansu_pid = None
    progress = None
    succeeded = False  # the work folder (worker and broker logs, offline logs) is kept otherwise
    base = load_settings()
    bootstrap = base.kafka.bootstrap_servers
    if not kafka_answers(bootstrap):
        port = free_loopback_port()
        tansu_pid = start_tansu(port, work / "tansu.log")
        bootstrap = f"127.0.0.1:{port}"
    overrides: dict[str, Any] = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "REDIS_URL": base.redis.url.get_secret_value(),
    }
    settings = fresh_settings(overrides, work / ".aether")
    services = ServiceCpu(overrides["REDIS_URL"], tansu_pid)
    workers = []
    try:
        topics = ensure_topics(settings)
        data = load_movielens(args.dataset, args.data)
        events = rating_events(args.dataset, data.ratings)  # lazily: ML-1M is 2.7 M events
        first = next(events)
        events = itertools.chain([first], events)
        floor = ("--faust-floor",) if args.faust_floor else ()
        workers = start_workers(settings, args.workers, work, floor)
        ports = [port for _, port in workers]
        producer = make_producer(bootstrap)
        if args.faust_floor:
            code = faust_floor(args, settings, ports, producer, events)
            succeeded = code == 0
            return code
        warm_up(settings, ports, first.event_time_ms)
        progress = StepProgress(settings)

        # Phase 1: throughput.
        batch = _take(events, args.limit)
        in_process = pure_handler_rate(batch, settings.stream.batch_size)
        print(f"pure handlers, in process (no broker, no stores): {in_process:,.0f} events/s")
        slates = serving_slates(batch, args.slate_every)
        gc_before = full_collections(ports)
        measured = measure_throughput(
            ports, progress, topics, producer, slates, batch, services, "throughput"
        )
        print(
            f"throughput: {len(batch)} events in {measured.elapsed_s:.1f} s = {measured.rate:,.0f} "
            f"events/s end to end with {args.workers} worker(s) (produced in "
            f"{measured.produced_s:.1f} s)"
        )
        print(
            f"worker CPU: {measured.cpu_s:.1f} s = {measured.events_per_cpu_s:,.0f} events per CPU "
            f"second; batches by agent: {measured.batches}; load average {_loadavg()}"
        )
        print(
            "worker CPU per event by stage (µs): "
            + ", ".join(f"{stage} {us:.1f}" for stage, us in measured.stages.items())
        )
        print(services_line(measured.services_us, measured.cpu_us_per_event))
        reference = None
        if args.scale_out and args.workers == 1:
            reference = settled_outputs(settings, batch)
        elif args.scale_out:
            print("scale-out phase skipped: it compares against a one-worker run (--workers 1)")

        # Phase 2: freshness at offered rates.
        fractions = [float(x) for x in args.rates.split(",") if x.strip()]
        figures: dict[str, Any] = {}
        offered = []
        for fraction in fractions:
            rate = max(1, int(measured.rate * fraction))
            offered.append(rate)
            chunk = _take(events, int(rate * args.seconds))
            if not chunk:
                print("dataset exhausted; stopping")
                break
            late_before = outcome_counts(ports).get((topics.events, "late"), 0)
            cpu_before_phase, batches_before_phase = worker_usage(ports)
            stages_before_phase = stage_cpu_seconds(ports)
            probe = FreshnessProbe(settings, wall_clock_ms)
            probe.start()
            _paced(producer, topics.events, chunk, rate)
            probe.stop_flag.set()
            probe.join()
            # Judged late by the workers (never applied): with wall-clock stamps, none should be.
            late = outcome_counts(ports).get((topics.events, "late"), 0) - late_before
            # Live events cost more than the backlog's: small batches, and event times within
            # the allowed lateness of each other (per event, over the phase and its probes).
            cpu_after_phase, batches_after_phase = worker_usage(ports)
            phase_cpu_s = cpu_after_phase - cpu_before_phase
            phase_batches = batches_since(batches_before_phase, batches_after_phase)
            phase_events = len(chunk) + len(probe.latencies_ms) + probe.lost
            cpu_us = phase_cpu_s * 1e6 / phase_events
            phase_stages = stage_split(
                stages_before_phase, stage_cpu_seconds(ports), phase_cpu_s, phase_events
            )
            p50, p99 = percentile(probe.latencies_ms, 0.5), percentile(probe.latencies_ms, 0.99)
            lost = f", {probe.lost} not visible within {probe.timeout_s:g} s" if probe.lost else ""
            print(
                f"offered {rate:>7,} ev/s: freshness p50 {p50:6.1f} ms  p99 {p99:6.1f} ms "
                f"({len(probe.latencies_ms)} probes{lost}; {late} events late; "
                f"worker CPU {cpu_us:.0f} µs per event)"
            )
            figures[f"late_events_at_{rate}"] = late
            figures[f"worker_cpu_us_per_event_at_{rate}"] = round(cpu_us, 1)
            print(
                "  its worker CPU per event by stage (µs): "
                + ", ".join(f"{stage} {us:.1f}" for stage, us in phase_stages.items())
                + f"; batches by agent: {phase_batches}"
            )
            for agent, n in phase_batches.items():
                figures[f"batches_{agent}_at_{rate}"] = n
            for stage, us in phase_stages.items():
                figures[f"stage_cpu_us_per_event_{stage}_at_{rate}"] = round(us, 1)
            figures[f"freshness_p50_ms_at_{rate}"] = round(p50, 2)
            figures[f"freshness_p99_ms_at_{rate}"] = round(p99, 2)
            figures[f"freshness_probes_at_{rate}"] = len(probe.latencies_ms)
            figures[f"freshness_lost_probes_at_{rate}"] = probe.lost
            if fraction == 0.5:
                figures["freshness_p50_ms"] = round(p50, 2)
                figures["freshness_p99_ms"] = round(p99, 2)
        passes, pause_s, stalls = (
            after - before for after, before in zip(full_collections(ports), gc_before, strict=True)
        )
        print(
            f"worker full collections over both phases: {passes:.0f}, "
            f"mean {1000 * pause_s / max(passes, 1):.1f} ms, "
            f"{stalls:.0f} longer than {1000 * FULL_PASS_STALL_S:.0f} ms"
        )
        offline = offline_log_figures(settings)
        load_average = _loadavg()
        stop_workers(workers)
        scaled: dict[str, Any] = {}
        if reference is not None:
            scaled = scale_out(
                overrides, batch, slates, reference, measured.rate, work, services, args.pairs
            )
        floor_figures: dict[str, Any] = {}
        if args.floor:
            floor_figures = floor_in_fresh_namespace(overrides, producer, batch, work)
            share = measured.events_per_cpu_s / floor_figures["faust_floor_events_per_worker_cpu_s"]
            floor_figures["share_of_faust_floor"] = round(share, 3)
            print(f"the full worker's events per CPU second are {100 * share:.0f} % of the floor's")
        print(
            "offline log: {offline_log_batches} batches in {offline_log_files} files "
            "({offline_log_bytes:,} bytes); feature history: {feature_history_batches} batches "
            "in {feature_history_files} files ({feature_history_bytes:,} bytes)".format(**offline)
        )
        machine = machine_description()
        print(f"machine: {machine}")
        result = {
            "gc_full_passes": int(passes),
            "gc_full_pause_mean_ms": round(1000 * pause_s / max(passes, 1), 2),
            "gc_full_passes_over_30ms": int(stalls),
            "events_per_s": round(measured.rate, 1),
            "workers": args.workers,
            "events": len(batch),
            "slates": len(slates),
            "handlers_events_per_s": round(in_process, 1),
            "worker_cpu_s": round(measured.cpu_s, 2),
            "events_per_worker_cpu_s": round(measured.events_per_cpu_s, 1),
            **{f"batches_{agent}": n for agent, n in measured.batches.items()},
            **{
                f"stage_cpu_us_per_event_{stage}": round(us, 2)
                for stage, us in measured.stages.items()
            },
            **{
                f"{name}_cpu_us_per_event": round(us, 2)
                for name, us in measured.services_us.items()
            },
            "load_average": load_average,
            "offered_rates": offered,
            **figures,
            **offline,
            **scaled,
            **floor_figures,
            "machine": machine,
        }
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        succeeded = bool(scaled.get("scale_out_state_equal", True))
        return 0 if succeeded else 1
    finally:
        if progress is not None:
            progress.close()
        stop_workers(workers)
        url = settings.redis.url.get_secret_value()
        delete_namespace_keys(url, settings.namespace, cluster=settings.redis.cluster)
        if tansu_pid is not None:
            stop_process(tansu_pid)
        if succeeded:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"worker and broker logs kept in {work}", file=sys.stderr)


def offline_log_figures(settings: Settings) -> dict[str, int]:
    """Live files, bytes and batches appended of the workers' offline logs
    (``features.batch_folder``): the event log, the impression log and the feature history (both
    views), as ``<log>_files``, ``<log>_bytes`` and ``<log>_batches``."""
    from features.batch_folder import folder_usage
    from features.offline import offline_dir
    from features.schema import ITEM_VIEW, USER_VIEW
    from features.store import feature_history_dir

    offline, history = offline_dir(settings.deployment), feature_history_dir(settings.deployment)
    logs = {
        "offline_log": [offline / "events"],
        "offline_impressions": [offline / "impressions"],
        "feature_history": [history / USER_VIEW, history / ITEM_VIEW],
    }
    figures: dict[str, int] = {}
    for name, folders in logs.items():
        usages = [folder_usage(folder) for folder in folders]
        figures[f"{name}_files"] = sum(u.files for u in usages)
        figures[f"{name}_bytes"] = sum(u.bytes for u in usages)
        figures[f"{name}_batches"] = sum(u.batches for u in usages)
    return figures


def faust_floor(
    args: argparse.Namespace, settings: Settings, ports: list[int], producer: Any, events: Any
) -> int:
    """Throughput of workers that only consume ``<ns>.events`` and count (no features)."""
    warm = _take(events, 100)
    batch = _take(events, args.limit)
    rate, cpu_s = _floor_rate(settings, ports, producer, warm, batch)
    print(
        f"faust floor: {len(batch)} events in {len(batch) / rate:.1f} s = {rate:,.0f} events/s "
        f"consumed and counted by {args.workers} worker(s); worker CPU {cpu_s:.1f} s = "
        f"{len(batch) / max(cpu_s, 1e-9):,.0f} events per CPU second; load average {_loadavg()}"
    )
    if args.json:
        result = {
            "faust_floor_events_per_s": round(rate, 1),
            "workers": args.workers,
            "events": len(batch),
            "worker_cpu_s": round(cpu_s, 2),
            "events_per_worker_cpu_s": round(len(batch) / max(cpu_s, 1e-9), 1),
            "load_average": _loadavg(),
            "machine": machine_description(),
        }
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


def floor_in_fresh_namespace(
    overrides: dict[str, Any], producer: Any, batch: list[Any], work: Path
) -> dict[str, Any]:
    """Phase 4: ``batch`` through one floor worker (``aether worker --faust-floor``) in a fresh
    namespace; its events per second and per worker CPU second."""
    from stack.redis_server import delete_namespace_keys
    from streams.topics import ensure_topics

    settings = fresh_settings(overrides, work / ".aether-floor")
    logs = work / "floor"
    logs.mkdir(exist_ok=True)
    workers = []
    try:
        ensure_topics(settings)
        workers = start_workers(settings, 1, logs, ("--faust-floor",))
        ports = [port for _, port in workers]
        rate, cpu_s = _floor_rate(settings, ports, producer, batch[:100], batch)
    finally:
        stop_workers(workers)
        url = settings.redis.url.get_secret_value()
        delete_namespace_keys(url, settings.namespace, cluster=settings.redis.cluster)
    per_cpu_s = len(batch) / max(cpu_s, 1e-9)
    print(
        f"faust floor (same events, fresh namespace, 1 worker): {rate:,.0f} events/s, "
        f"{per_cpu_s:,.0f} events per CPU second"
    )
    return {
        "faust_floor_events_per_s": round(rate, 1),
        "faust_floor_events_per_worker_cpu_s": round(per_cpu_s, 1),
    }


def _floor_rate(
    settings: Settings, ports: list[int], producer: Any, warm: list[Any], batch: list[Any]
) -> tuple[float, float]:
    """Floor workers joined with ``warm``, then ``batch`` consumed: (events/s, worker CPU s)."""
    from streams.publish import publish

    topic = settings.topic("events")
    publish(producer, topic, warm, total=len(warm), description="warm-up")
    _wait(lambda: consumed(ports, topic, len(warm)), 120, "workers to join and consume")
    cpu_before, _ = worker_usage(ports)
    started = time.perf_counter()
    publish(producer, topic, batch, total=len(batch), description="floor")
    _wait(lambda: consumed(ports, topic, len(warm) + len(batch)), 1800, "all consumed")
    elapsed = time.perf_counter() - started
    return len(batch) / elapsed, worker_usage(ports)[0] - cpu_before


def _loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def pure_handler_rate(messages: list[Any], batch_size: int) -> float:
    """Events/s of decode + user and item state machines alone (``streams.testing``), for scale."""
    from streams.handlers import SourceRecord
    from streams.testing import LocalPipeline

    records = [SourceRecord("events", 0, n, m.value, m.key) for n, m in enumerate(messages)]
    pipeline = LocalPipeline()
    started = time.perf_counter()
    for start in range(0, len(records), batch_size):
        pipeline.feed(records[start : start + batch_size])
    return len(records) / (time.perf_counter() - started)


def _take(events: Iterator[Any], count: int) -> list[Any]:
    return list(itertools.islice(events, count))


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


def _paced(producer: Any, topic: str, messages: list[Any], rate: int) -> None:
    """Produce at ``rate`` messages per second (in 10 ms slices), each stamped with the wall clock
    as it goes out: live traffic, as the probe's (``FreshnessProbe``). With the replay's own
    times, which run minutes of event time per slice, a probe overtaken by the next slice was
    judged late and never applied, and one ahead of its slice made that slice's events late."""
    started = time.perf_counter()
    slice_size = max(1, rate // 100)
    for start in range(0, len(messages), slice_size):
        for message in messages[start : start + slice_size]:
            body = orjson.loads(message.value)
            body["event_time"] = wall_clock_ms()
            value = orjson.dumps(body)
            while True:
                try:
                    producer.produce(topic, value=value, key=message.key)
                    break
                except BufferError:
                    producer.poll(0.01)
        producer.poll(0)
        due = started + (start + slice_size) / rate
        wait = due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
    producer.flush(60)


POLL_S = 0.05  # between reads of the steps' committed offsets (``wait_applied``)


def _wait(predicate: Any, timeout_s: float, what: str, poll_s: float = 0.2) -> None:
    """Until ``predicate()``; a poll that scrapes the workers' /metrics costs them CPU, so the
    default interval is not too short."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(poll_s)
    raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
