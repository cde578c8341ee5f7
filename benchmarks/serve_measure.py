"""The measured rates of ``aether bench serve`` (``benchmarks.serve``, and its floor,
``benchmarks.serve_floor``): warm-up and idle, then each offered rate under h2load
(``serve_h2load``) or the Python client (``serve_load``), and the flat ``*_at_<rate>rps`` figures
of each, client side and server side (the server child's Prometheus endpoint and ``/proc``)."""

from __future__ import annotations

import argparse
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.serve_h2load import (
    H2loadRate,
    body_users,
    h2load_with_sample,
    plan_processes,
    request_body,
)
from benchmarks.serve_load import LoadResult, offered_load, request_users
from benchmarks.serve_server import ServerProcess

P99_TARGET_MS = 20.0


@dataclass(frozen=True)
class ServerCounters:
    """Which of the server's samples count what."""

    answered: str  # the denominator of CPU per request
    ok: str  # calls answered OK, every client's
    statuses: str | None = None  # a counter labelled by the gRPC status every call ended with


# `aether serve`'s server: pipeline runs, and calls by status (counted before any handler, so
# refused calls too: serving.server_metrics.RequestStatusInterceptor).
PIPELINE = ServerCounters(
    answered="aether_recommend_seconds_count",
    ok='aether_recommend_requests_total{status="OK"}',
    statuses="aether_recommend_requests_total",
)
# The floor's server counts the calls its handler answered (benchmarks.serve_floor).
FLOOR = ServerCounters(
    answered="aether_bench_floor_answers_total", ok="aether_bench_floor_answers_total"
)


@dataclass(frozen=True)
class LoadPlan:
    """How each rate is loaded (``aether bench serve``'s arguments)."""

    rates: list[int]
    seconds: float
    load: str  # "h2load" or "python"
    k: int
    deadline_s: float
    channels: int  # connections at least (h2load), channels (python)
    unknown_share: float
    seed: int
    bodies: int  # h2load: request bodies = h2load processes = distinct users per rate
    sample_rps: float  # h2load: the sampled client's rate
    work: Path  # h2load's bodies and logs

    @classmethod
    def from_args(cls, args: argparse.Namespace, channels: int, work: Path) -> LoadPlan:
        return cls(
            rates=[int(x) for x in args.rates.split(",") if x.strip()],
            seconds=args.seconds,
            load=args.load,
            k=args.k,
            deadline_s=args.deadline_s,
            channels=channels,
            unknown_share=args.unknown_share,
            seed=args.seed,
            bodies=args.h2load_bodies,
            sample_rps=args.sample_rps,
            work=work,
        )


@dataclass
class Measured:
    figures: dict[str, Any]
    model_versions: Counter[str]  # of the checked answers (python: all; h2load: the sampled)


def warm_up_and_idle(
    server: ServerProcess, users: list[str], plan: LoadPlan
) -> tuple[LoadResult, dict[str, float]]:
    """50 requests/s of the Python client (not reported), then 3 s without requests: what the
    server burns by itself."""
    warm = offered_load(
        server.address, users, 50, k=plan.k, deadline_s=plan.deadline_s, channels=plan.channels
    )
    idle_before, idle_started = server.cpu_seconds(), time.perf_counter()
    time.sleep(3.0)
    idle_after, idle_s = server.cpu_seconds(), time.perf_counter() - idle_started
    idle = {
        "server_idle_cpu_cores": round((sum(idle_after) - sum(idle_before)) / idle_s, 3),
        "server_idle_python_cpu_cores": round((idle_after[0] - idle_before[0]) / idle_s, 3),
    }
    return warm, idle


def measure_rates(
    server: ServerProcess, user_ids: list[str], plan: LoadPlan, counters: ServerCounters
) -> Measured:
    """Each rate of ``plan`` in turn against ``server``; users drawn from ``user_ids`` (seeded,
    a fresh draw per rate)."""
    figures: dict[str, Any] = {}
    versions: Counter[str] = Counter()
    for n, rate in enumerate(plan.rates):
        time.sleep(1.0)  # let the previous rate's stragglers and retries settle
        seed = plan.seed + n
        before, cpu_before = server.metrics(), server.cpu_seconds()
        if plan.load == "python":
            users = request_users(user_ids, int(rate * plan.seconds), plan.unknown_share, seed)
            load = offered_load(
                server.address,
                users,
                rate,
                k=plan.k,
                deadline_s=plan.deadline_s,
                channels=plan.channels,
            )
            checked = load
        else:
            bodies = [
                request_body(user, plan.k)
                for user in body_users(user_ids, plan.bodies, plan.unknown_share, seed)
            ]
            sample = int(plan.sample_rps * plan.seconds)
            measured = h2load_with_sample(
                server.address,
                bodies,
                request_users(user_ids, sample, plan.unknown_share, seed + 1000),
                rate,
                plan.seconds,
                plan.work / f"{rate}rps",
                k=plan.k,
                deadline_s=plan.deadline_s,
                connections=plan.channels,
                sample_rps=plan.sample_rps,
            )
            checked = measured.sampled
        cpu_after = server.cpu_seconds()
        after = server.metrics()
        cpu = (cpu_after[0] - cpu_before[0], cpu_after[1] - cpu_before[1])
        if plan.load == "python":
            figures.update(rate_figures(rate, load, before, after, cpu, counters.answered))
        else:
            figures.update(h2load_rate_figures(rate, measured, before, after, cpu, counters))
        versions.update(checked.model_versions)
    return Measured(figures, versions)


def h2load_settings(plan: LoadPlan) -> dict[str, Any]:
    """How h2load loaded the server, for the JSON summary (nothing with the Python client)."""
    if plan.load != "h2load":
        return {}
    processes = plan_processes(max(plan.rates), plan.seconds, plan.bodies, plan.channels, 1.0)
    return {
        "h2load_bodies": plan.bodies,
        "h2load_connections": len(processes),
        "sample_rps": plan.sample_rps,
    }


def within_target(rates: list[int], figures: dict[str, Any]) -> list[int]:
    """The offered rates answered with p99 ≤ 20 ms and ≥ 95 % of the rate achieved (OK)."""
    return [
        rate
        for rate in rates
        if figures.get(f"p99_ms_at_{rate}rps", float("nan")) <= P99_TARGET_MS
        and figures.get(f"achieved_rps_at_{rate}rps", 0.0) >= 0.95 * rate
    ]


# -- figures of one rate ----------------------------------------------------------------------------
Delta = Callable[[str], float]


def _delta(before: dict[str, float], after: dict[str, float]) -> Delta:
    return lambda name: after.get(name, 0.0) - before.get(name, 0.0)


def rate_figures(
    rate: int,
    load: LoadResult,
    before: dict[str, float],
    after: dict[str, float],
    server_cpu_s: tuple[float, float],
    answered_key: str = PIPELINE.answered,
) -> dict[str, Any]:
    """Flat ``*_at_<rate>rps`` figures of one rate of the Python client, client and server side."""
    suffix = f"_at_{rate}rps"
    figures: dict[str, Any] = {
        f"p50_ms{suffix}": round(load.percentile_ms(50), 2),
        f"p90_ms{suffix}": round(load.percentile_ms(90), 2),
        f"p99_ms{suffix}": round(load.percentile_ms(99), 2),
        f"achieved_rps{suffix}": round(load.achieved_rps, 1),
        f"requests{suffix}": load.sent,
        f"errors{suffix}": load.sent - load.ok,
        f"fallback_share{suffix}": round(load.fallbacks / max(1, load.ok), 3),
        f"short_slates{suffix}": load.short_slates,
        f"client_cpu_ms_per_request{suffix}": round(
            1000 * load.client_cpu_s / max(1, load.sent), 3
        ),
    }
    for reason, count in sorted(load.fallback_reasons.items()):
        figures[f"fallback_{_name(reason)}{suffix}"] = count
    for code, count in sorted(load.codes.items()):
        if code != "OK":
            figures[f"errors_{code}{suffix}"] = count
    figures.update(server_figures(suffix, _delta(before, after), after, server_cpu_s, answered_key))
    return figures


def h2load_rate_figures(
    rate: int,
    measured: H2loadRate,
    before: dict[str, float],
    after: dict[str, float],
    server_cpu_s: tuple[float, float],
    counters: ServerCounters,
) -> dict[str, Any]:
    """Flat ``*_at_<rate>rps`` figures of one rate of h2load: latency from h2load's log, OK
    answers and errors from the server's counters (less the sampled client's), the sampled
    client's checks, and the server side."""
    load, sampled = measured.load, measured.sampled
    suffix = f"_at_{rate}rps"
    delta = _delta(before, after)
    ok = round(delta(counters.ok)) - sampled.ok  # h2load's calls answered OK
    figures: dict[str, Any] = {
        f"p50_ms{suffix}": round(load.percentile_ms(50), 2),
        f"p90_ms{suffix}": round(load.percentile_ms(90), 2),
        f"p99_ms{suffix}": round(load.percentile_ms(99), 2),
        f"achieved_rps{suffix}": round(ok / load.window_s, 1) if load.window_s > 0 else 0.0,
        f"requests{suffix}": load.requests,
        f"send_lag_p50_ms{suffix}": round(load.send_lag_ms(50), 2),
        f"send_lag_p99_ms{suffix}": round(load.send_lag_ms(99), 2),
        f"h2load_answered{suffix}": load.succeeded,
        f"h2load_failed{suffix}": load.failed,
        f"grpc_ok{suffix}": ok,
        f"errors{suffix}": load.requests - ok,
        f"client_cpu_ms_per_request{suffix}": round(1000 * load.cpu_s / max(1, load.requests), 4),
        f"sampled_requests{suffix}": sampled.sent,
        f"sampled_errors{suffix}": sampled.sent - sampled.ok,
        f"sampled_empty_slates{suffix}": sampled.empty_slates,
        f"sampled_short_slates{suffix}": sampled.short_slates,
        f"sampled_fallback_share{suffix}": round(sampled.fallbacks / max(1, sampled.ok), 3),
    }
    for key in after:
        if counters.statuses:
            found = re.fullmatch(re.escape(counters.statuses) + r'\{status="([^"]+)"\}', key)
            if found and found.group(1) != "OK" and delta(key) > 0:
                figures[f"errors_{found.group(1)}{suffix}"] = round(delta(key))
        found = re.fullmatch(r'aether_recommend_fallbacks_total\{reason="([^"]+)"\}', key)
        if found and delta(key) > 0:
            figures[f"fallback_steps_{_name(found.group(1))}{suffix}"] = round(delta(key))
    slots = sum(delta(key) for key in after if key.startswith("aether_recommend_slate_items_total"))
    if slots:
        figures[f"slate_items_per_answer{suffix}"] = round(slots / max(1.0, delta(PIPELINE.ok)), 2)
    figures.update(server_figures(suffix, delta, after, server_cpu_s, counters.answered))
    return figures


def server_figures(
    suffix: str,
    delta: Delta,
    after: dict[str, float],
    server_cpu_s: tuple[float, float],
    answered_key: str,
) -> dict[str, Any]:
    """CPU per answered request of the server's processes, by thread and by pipeline stage."""
    answered = max(1.0, delta(answered_key))
    figures: dict[str, Any] = {
        # All server CPU, then the Python server process alone (its GIL bounds one process).
        f"server_cpu_ms_per_request{suffix}": round(1000 * sum(server_cpu_s) / answered, 3),
        f"server_python_cpu_ms_per_request{suffix}": round(1000 * server_cpu_s[0] / answered, 3),
    }
    if delta("aether_recommend_seconds_count") > 0:  # the pipeline ran (not the floor)
        figures[f"server_pipeline_mean_ms{suffix}"] = round(
            1000 * delta("aether_recommend_seconds_sum") / answered, 3
        )
    for key in after:
        found = re.fullmatch(r'aether_bench_thread_cpu_seconds_total\{thread="([^"]+)"\}', key)
        if found and 1000 * delta(key) / answered >= 0.01:
            name = _name(found.group(1))
            figures[f"thread_cpu_ms_{name}{suffix}"] = round(1000 * delta(key) / answered, 3)
    figures.update(stage_figures(suffix, delta, after))
    figures.update(batch_figures(suffix, delta, after))
    return figures


def batch_figures(suffix: str, delta: Delta, after: dict[str, float]) -> dict[str, Any]:
    """Per batch point of ``serving.batching`` (``aether_serving_batch_size{stage}``, one
    observation per batch): batches, their mean size, and how many batches had each size
    (``"1:…"`` = size 1, ``"2:…"`` = 2, ``"3-4:…"``, …, as the histogram's buckets bound them)."""
    figures: dict[str, Any] = {}
    for key in after:
        found = re.fullmatch(r'aether_serving_batch_size_count\{stage="([^"]+)"\}', key)
        if not found or delta(key) <= 0:
            continue
        stage, batches = found.group(1), delta(key)
        total = delta(f'aether_serving_batch_size_sum{{stage="{stage}"}}')
        bounds = sorted(
            float(m.group(1))
            for k in after
            if (
                m := re.fullmatch(
                    rf'aether_serving_batch_size_bucket\{{le="([0-9.]+)",stage="{stage}"\}}', k
                )
            )
        )
        cumulative = [
            delta(f'aether_serving_batch_size_bucket{{le="{b}",stage="{stage}"}}') for b in bounds
        ]
        parts, low = [], 1
        for bound, n, previous in zip(bounds, cumulative, [0.0, *cumulative], strict=False):
            high = int(bound)
            if n - previous > 0:
                parts.append(f"{low if low == high else f'{low}-{high}'}:{int(n - previous)}")
            low = high + 1
        if batches - (cumulative[-1] if cumulative else 0) > 0:
            parts.append(f">{low - 1}:{int(batches - cumulative[-1])}")
        figures[f"batches_{stage}{suffix}"] = int(batches)
        figures[f"batch_size_mean_{stage}{suffix}"] = round(total / batches, 2)
        figures[f"batch_sizes_{stage}{suffix}"] = " ".join(parts)
    return figures


def stage_figures(suffix: str, delta: Delta, after: dict[str, float]) -> dict[str, float]:
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


def _name(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", label.lower())


# -- the table ------------------------------------------------------------------------------------
def print_table(rates: list[int], figures: dict[str, Any]) -> None:
    """Latency and errors per rate, then the server's CPU, per stage and per thread."""
    nan = float("nan")
    print(
        f"{'offered':>7} {'achieved':>8} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6}"
        f" {'checked':>7} {'server cpu ms/req':>17} {'python':>7} {'client':>7}"
    )
    for rate in rates:
        s = f"_at_{rate}rps"
        # The Python client checks every answer; with h2load, the sampled client checks some.
        checked = figures.get(f"sampled_requests{s}", figures.get(f"requests{s}", 0))
        print(
            f"{rate:>7} {figures.get(f'achieved_rps{s}', nan):>8.1f}"
            f" {figures.get(f'p50_ms{s}', nan):>7.2f} {figures.get(f'p99_ms{s}', nan):>7.2f}"
            f" {figures.get(f'errors{s}', 0):>6} {checked:>7}"
            f" {figures.get(f'server_cpu_ms_per_request{s}', nan):>17.3f}"
            f" {figures.get(f'server_python_cpu_ms_per_request{s}', nan):>7.3f}"
            f" {figures.get(f'client_cpu_ms_per_request{s}', nan):>7.3f}"
        )
    stages = sorted(
        {k.split("_at_")[0][len("cpu_ms_") :] for k in figures if k.startswith("cpu_ms_")}
    )
    if stages:
        print("server stages, mean per call: thread CPU ms / wall ms")
        print(f"{'offered':>7} " + " ".join(f"{name[:18]:>18}" for name in stages))
        for rate in rates:
            s = f"_at_{rate}rps"
            cells = [
                f"{figures.get(f'cpu_ms_{n}{s}', nan):.2f}/{figures.get(f'wall_ms_{n}{s}', nan):.2f}"
                for n in stages
            ]
            print(f"{rate:>7} " + " ".join(f"{c:>18}" for c in cells))
    print("server threads, CPU ms per answered request")
    for rate in rates:
        s = f"_at_{rate}rps"
        top = [
            f"{key[len('thread_cpu_ms_') : -len(s)]}={value:.3f}"
            for key, value in figures.items()
            if key.startswith("thread_cpu_ms_") and key.endswith(s)
        ]
        print(f"{rate:>7} " + "  ".join(top))
