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

The replay has no slates, so without ``--slate-every N`` attribution has no work and the
posteriors are empty in both namespaces; with it, both throughput runs also carry one
serving-style slate per N views (:func:`serving_slates`, produced before the events).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson

from core.settings import Settings
from interactions.replay import ReplayMessage
from stack.namespace_outputs import capped_anchors, differing_outputs, namespace_outputs

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


def scale_out(
    overrides: dict[str, Any],
    messages: list[Any],
    slates: list[ReplayMessage],
    reference: dict[str, Any],
    work: Path,
) -> dict[str, Any]:
    """Run ``slates`` and ``messages`` through ``WORKERS`` workers in a fresh namespace; its
    figures, and whether its outputs equal ``reference`` (the one-worker namespace's after the
    same records)."""
    from benchmarks.ingest import (
        _loadavg,
        events_decided,
        fresh_settings,
        stage_cpu_seconds,
        stage_split,
        start_workers,
        stop_workers,
        wait_applied,
        warm_up,
        worker_usage,
    )
    from stack.redis_server import delete_namespace_keys
    from streams.progress import StepProgress
    from streams.publish import make_producer, publish
    from streams.topics import ensure_topics

    settings = fresh_settings(overrides, work / f".aether-{WORKERS}workers")
    workers = []
    progress = None
    try:
        topics = ensure_topics(settings)
        logs = work / f"{WORKERS}workers"
        logs.mkdir(exist_ok=True)
        workers = start_workers(settings, WORKERS, logs)
        ports = [port for _, port in workers]
        warm_up(settings, ports, messages[0].event_time_ms)
        progress = StepProgress(settings)
        cpu_before, batches_before = worker_usage(ports)
        stages_before = stage_cpu_seconds(ports)
        events_before = [events_decided([port], topics.events) for port in ports]
        producer = make_producer(settings.kafka.bootstrap_servers)
        publish(producer, topics.impressions, slates, total=len(slates), progress=False)
        started = time.perf_counter()
        publish(producer, topics.events, messages, total=len(messages), description="2 workers")
        wait_applied(progress, topics)
        elapsed = time.perf_counter() - started
        cpu_after, batches_after = worker_usage(ports)
        cpu_s = cpu_after - cpu_before
        stages = stage_split(stages_before, stage_cpu_seconds(ports), cpu_s, len(messages))
        batches = {a: n - batches_before.get(a, 0) for a, n in sorted(batches_after.items())}
        shares = [
            (events_decided([port], topics.events) - before) / len(messages)
            for port, before in zip(ports, events_before, strict=True)
        ]
        rate = len(messages) / elapsed
        print(
            f"scale-out: {len(messages)} events in {elapsed:.1f} s = {rate:,.0f} events/s end to "
            f"end with {WORKERS} workers; worker CPU {cpu_s:.1f} s; batches by agent: {batches}; "
            f"load average {_loadavg()}"
        )
        print(
            "  events per worker (their users' partitions): "
            + " : ".join(f"{share:.0%}" for share in sorted(shares, reverse=True))
            + f"; the busiest bounds the speed-up at {1 / max(shares):.2f}× one worker"
        )
        print(
            f"  {WORKERS} workers' CPU per event by stage (µs): "
            + ", ".join(f"{stage} {us:.1f}" for stage, us in stages.items())
        )
        got = settled_outputs(settings, messages)
    finally:
        if progress is not None:
            progress.close()
        stop_workers(workers)
        url = settings.redis.url.get_secret_value()
        delete_namespace_keys(url, settings.namespace, cluster=settings.redis.cluster)
    differ = differing_outputs(reference, got)
    capped = capped_anchors(reference["transitions"]) | capped_anchors(got["transitions"])
    print(
        f"scale-out state: {len(got['users'])} user rows, {len(got['items'])} item rows, "
        f"{len(got['transitions'])} transitions ({len(capped)} anchors at the neighbour cap: "
        "totals compared), "
        f"{sum(len(h) for h in got['posteriors'].values())} posterior entries "
        + ("equal to the one-worker run's" if not differ else f"DIFFER in {', '.join(differ)}")
    )
    return {
        f"events_per_s_{WORKERS}workers": round(rate, 1),
        f"worker_cpu_s_{WORKERS}workers": round(cpu_s, 2),
        f"events_per_worker_cpu_s_{WORKERS}workers": round(len(messages) / max(cpu_s, 1e-9), 1),
        **{f"batches_{a}_{WORKERS}workers": n for a, n in batches.items()},
        **{
            f"stage_cpu_us_per_event_{stage}_{WORKERS}workers": round(us, 2)
            for stage, us in stages.items()
        },
        "scale_out_busiest_worker_share": round(max(shares), 3),
        "scale_out_state_equal": not differ,
        "scale_out_differing_outputs": differ,
        "scale_out_user_rows": len(got["users"]),
        "scale_out_item_rows": len(got["items"]),
        "scale_out_transitions": len(got["transitions"]),
        "scale_out_capped_anchors": len(capped),
        "scale_out_posterior_entries": sum(len(h) for h in got["posteriors"].values()),
    }
