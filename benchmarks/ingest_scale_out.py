"""``aether bench ingest``'s scale-out phase: the throughput events through two workers.

Two ``aether worker`` processes in one consumer group (a fresh namespace on the same broker and
Redis) consume the very events of the throughput phase, which ran with one worker; the rate is
measured as in that phase, and then both namespaces' outputs (``stack.namespace_outputs``: the
Feast rows of every user and item of those events, the item transitions, the bandit posteriors)
must be equal: spreading the partitions over workers may change how the stream is cut into
batches, never the state (the workers run with attribution's wall-time idleness rule off, see
``benchmarks.ingest.start_workers``, so the state is a function of the events). One exception is
by design: an anchor at the transition store's neighbour cap keeps an order-dependent tail, so
its total is compared instead of its neighbours (``stack.namespace_outputs.capped_anchors``).
The offline logs are left out: they are written in each worker's
background thread and the one-worker namespace's also holds the freshness phase's events.

Each pair of runs after the first (``--pairs``) starts both runs afresh the same way
(:func:`run_fresh`): one worker, then two, in namespaces of their own; both runs' outputs are
compared with the first one-worker run's as well.

The replay has no slates, so without ``--slate-every N`` attribution has no work and the
posteriors are empty in both namespaces; with it, both throughput runs also carry one
serving-style slate per N views (:func:`serving_slates`, produced before the events).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from benchmarks.machine import ServiceCpu
from core.settings import Settings
from interactions.replay import ReplayMessage
from stack.namespace_outputs import capped_anchors, differing_outputs, namespace_outputs

if TYPE_CHECKING:
    from benchmarks.ingest import Throughput

WORKERS = 2
STABLE_S = 2.0  # outputs read again after this long must not have changed


def serving_slates(messages: list[ReplayMessage], every: int) -> list[ReplayMessage]:
    """One slate per ``every`` views (none when 0), shown to the viewer a millisecond before the
    view: the viewed item first, then item ``1`` (as ``tests/integration/streams/
    test_crash_replay.py``); the clicks of the replay reward the first slot."""
    if every <= 0:
        return []
    slates = []
    views = (m for m in messages if orjson.loads(m.value)["event_type"] == "view")
    for n, message in enumerate(views):
        if n % every:
            continue
        event = orjson.loads(message.value)
        body = {
            "request_id": f"bench-slate-{n}",
            "user_id": event["user_id"],
            "event_time": message.event_time_ms - 1,
            "model_version": "bench",
            "items": [
                {"item_id": item, "position": p, "score": 1.0, "source": "ann", "propensity": 0.5}
                for p, item in enumerate(dict.fromkeys((event["item_id"], "1")))
            ],
        }
        slates.append(ReplayMessage(message.key, orjson.dumps(body), message.event_time_ms - 1))
    return slates


def settled_outputs(
    settings: Settings, messages: list[Any], timeout_s: float = 300
) -> dict[str, Any]:
    """The namespace's outputs for the users and items of ``messages``, once two reads
    ``STABLE_S`` apart agree (the workers' counters say they are done; this says Redis too)."""
    users = sorted({m.key.decode() for m in messages if m.key})
    items = sorted({orjson.loads(m.value)["item_id"] for m in messages})
    deadline = time.monotonic() + timeout_s
    before = namespace_outputs(settings, users, items, offline_logs=False)
    while time.monotonic() < deadline:
        time.sleep(STABLE_S)
        after = namespace_outputs(settings, users, items, offline_logs=False)
        if after == before:
            return after
        before = after
    raise TimeoutError(f"outputs of {settings.namespace} still changing after {timeout_s:.0f} s")


def run_fresh(
    overrides: dict[str, Any],
    messages: list[Any],
    slates: list[ReplayMessage],
    work: Path,
    workers: int,
    services: ServiceCpu,
    label: str,
) -> tuple[Throughput, dict[str, Any]]:
    """Run ``slates`` and ``messages`` through ``workers`` workers in a fresh namespace, measured
    as the throughput phase is (``measure_throughput``); then its outputs, once settled."""
    from benchmarks.ingest import (
        fresh_settings,
        measure_throughput,
        start_workers,
        stop_workers,
        warm_up,
    )
    from stack.redis_server import delete_namespace_keys
    from streams.progress import StepProgress
    from streams.publish import make_producer
    from streams.topics import ensure_topics

    settings = fresh_settings(overrides, work / f".aether-{label}")
    processes = []
    progress = None
    try:
        topics = ensure_topics(settings)
        logs = work / label
        logs.mkdir(exist_ok=True)
        processes = start_workers(settings, workers, logs)
        ports = [port for _, port in processes]
        warm_up(settings, ports, messages[0].event_time_ms)
        progress = StepProgress(settings)
        producer = make_producer(settings.kafka.bootstrap_servers)
        measured = measure_throughput(
            ports, progress, topics, producer, slates, messages, services, label
        )
        return measured, settled_outputs(settings, messages)
    finally:
        if progress is not None:
            progress.close()
        stop_workers(processes)
        url = settings.redis.url.get_secret_value()
        delete_namespace_keys(url, settings.namespace, cluster=settings.redis.cluster)


def scale_out(
    overrides: dict[str, Any],
    messages: list[Any],
    slates: list[ReplayMessage],
    reference: dict[str, Any],
    one_worker_rate: float,
    work: Path,
    services: ServiceCpu,
    pairs: int = 1,
) -> dict[str, Any]:
    """Run ``slates`` and ``messages`` through ``WORKERS`` workers in a fresh namespace; its
    figures, and whether its outputs equal ``reference`` (the one-worker namespace's after the
    same records, which ran at ``one_worker_rate``). With ``pairs`` > 1, as many more pairs of
    runs, one worker then ``WORKERS``, each in a fresh namespace (module doc)."""
    from benchmarks.ingest import _loadavg, services_line

    run, got = run_fresh(overrides, messages, slates, work, WORKERS, services, f"{WORKERS}workers")
    shares = run.shares
    print(
        f"scale-out: {len(messages)} events in {run.elapsed_s:.1f} s = "
        f"{run.rate:,.0f} events/s end to end with {WORKERS} workers; worker CPU "
        f"{run.cpu_s:.1f} s; batches by agent: {run.batches}; load average {_loadavg()}"
    )
    print(
        "  events per worker (their users' partitions): "
        + " : ".join(f"{share:.0%}" for share in sorted(shares, reverse=True))
        + f"; the busiest bounds the speed-up at {1 / max(shares):.2f}× one worker"
    )
    print(
        f"  {WORKERS} workers' CPU per event by stage (µs): "
        + ", ".join(f"{stage} {us:.1f}" for stage, us in run.stages.items())
    )
    print("  " + services_line(run.services_us, run.cpu_us_per_event))
    differ = differing_outputs(reference, got)
    capped = capped_anchors(reference["transitions"]) | capped_anchors(got["transitions"])
    print(
        f"scale-out state: {len(got['users'])} user rows, {len(got['items'])} item rows, "
        f"{len(got['transitions'])} transitions ({len(capped)} anchors at the neighbour cap: "
        "totals compared), "
        f"{sum(len(h) for h in got['posteriors'].values())} posterior entries "
        + ("equal to the one-worker run's" if not differ else f"DIFFER in {', '.join(differ)}")
    )
    speedups = [run.rate / one_worker_rate]
    if pairs > 1:
        print(f"pair 1 (the phases above): {speedups[0]:.2f}× one worker")
    for n in range(2, pairs + 1):
        one, one_got = run_fresh(overrides, messages, slates, work, 1, services, f"pair{n}-1")
        two, two_got = run_fresh(
            overrides, messages, slates, work, WORKERS, services, f"pair{n}-{WORKERS}"
        )
        speedups.append(two.rate / one.rate)
        also = sorted(
            {
                kind
                for outputs in (one_got, two_got)
                for kind in differing_outputs(reference, outputs)
            }
        )
        differ += [kind for kind in also if kind not in differ]
        print(
            f"pair {n}: 1 worker {one.rate:,.0f}, {WORKERS} workers {two.rate:,.0f} events/s = "
            f"{speedups[-1]:.2f}× (worker CPU per event {one.cpu_us_per_event:.0f} and "
            f"{two.cpu_us_per_event:.0f} µs); "
            "both states "
            + ("equal to the first run's" if not also else f"DIFFER in {', '.join(also)}")
        )
    median = statistics.median(speedups)
    if pairs > 1:
        print(
            f"speed-up of {WORKERS} workers over 1, median of {pairs} pairs: {median:.2f}× "
            f"(each: {', '.join(f'{x:.2f}' for x in speedups)})"
        )
    return {
        f"events_per_s_{WORKERS}workers": round(run.rate, 1),
        f"worker_cpu_s_{WORKERS}workers": round(run.cpu_s, 2),
        f"events_per_worker_cpu_s_{WORKERS}workers": round(run.events_per_cpu_s, 1),
        **{f"batches_{a}_{WORKERS}workers": n for a, n in run.batches.items()},
        **{
            f"stage_cpu_us_per_event_{stage}_{WORKERS}workers": round(us, 2)
            for stage, us in run.stages.items()
        },
        **{
            f"{name}_cpu_us_per_event_{WORKERS}workers": round(us, 2)
            for name, us in run.services_us.items()
        },
        "scale_out_speedups": [round(x, 3) for x in speedups],
        "scale_out_speedup_median": round(median, 3),
        "scale_out_busiest_worker_share": round(max(shares), 3),
        "scale_out_state_equal": not differ,
        "scale_out_differing_outputs": differ,
        "scale_out_user_rows": len(got["users"]),
        "scale_out_item_rows": len(got["items"]),
        "scale_out_transitions": len(got["transitions"]),
        "scale_out_capped_anchors": len(capped),
        "scale_out_posterior_entries": sum(len(h) for h in got["posteriors"].values()),
    }
