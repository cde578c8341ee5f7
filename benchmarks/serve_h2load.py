"""The default load of ``aether bench serve`` (``benchmarks.serve``): Debian's ``h2load``
(package ``nghttp2-client``) posting gRPC unary calls, paired with a small sampled gRPC client
that checks the answers.

Why: the Python client (``serve_load.offered_load``) spends 0.5–2.4 ms of CPU per request on the
two cores the server runs on; h2load is C (its CPU is reported: ``client_cpu_ms_per_request``,
which includes each h2load process's start, a visible share in short runs). A gRPC unary call is an HTTP/2 POST
to ``/aetherrec.v1.Recommender/Recommend`` with ``content-type: application/grpc``,
``te: trailers``, ``grpc-timeout`` (the deadline) and a body of one length-prefixed message: a
0 byte (not compressed), the message's length as 4 bytes big-endian, the serialized
``RecommendRequest`` (``request_body``).

h2load posts one file for every request of a run, and ``--rps`` paces each connection from the
moment it opens, so each connection is its own h2load process (``plan_processes``), started at
its turn of one evenly spaced schedule at the offered rate: one user's body each (a seeded draw
per rate, ``bodies`` users over the connections), ``--rps`` the rate over the processes. ``-m``
(streams in flight per connection) is sized so that h2load never holds back a request that is
due while the server answers within the deadline: the load stays open-loop. How closely the
processes kept the schedule is measured (``send_lag_*``: each request's send time in h2load's
log less its scheduled time).

h2load does not read ``grpc-status`` (a refused call is an HTTP 200 with the status in its
trailers), so what the server answered is counted on the server (its status counter), and a
sampled client (``serve_load.offered_load`` at a few requests/s, in a thread) checks
``grpc-status`` OK and a non-empty slate. Latency comes from h2load's ``--log-file``: one line
per request, tab-separated: start (µs since the epoch), HTTP status (-1: the stream failed), µs
until the end of the response (``parse_log``).
"""

from __future__ import annotations

import math
import re
import resource
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.serve_load import LoadResult, offered_load

GRPC_HEADERS = ("content-type: application/grpc", "te: trailers")


# -- request bodies ---------------------------------------------------------------------------------
def grpc_frame(message: bytes) -> bytes:
    """One gRPC length-prefixed message: compressed flag 0, 4-byte big-endian length, bytes."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def grpc_unframe(body: bytes) -> bytes:
    """The message inside one uncompressed length-prefixed gRPC message (``grpc_frame``'s
    inverse); ``ValueError`` on anything else."""
    if len(body) < 5 or body[0] != 0:
        raise ValueError("not an uncompressed gRPC message")
    length = int.from_bytes(body[1:5], "big")
    if len(body) != 5 + length:
        raise ValueError(f"gRPC length prefix says {length} bytes, body has {len(body) - 5}")
    return body[5:]


def request_body(user_id: str, k: int) -> bytes:
    """The HTTP/2 body of ``Recommend(user_id, k)``."""
    from serving.proto import recommender_pb2 as pb

    return grpc_frame(pb.RecommendRequest(user_id=user_id, k=k).SerializeToString())


def body_users(user_ids: list[str], count: int, unknown_share: float, seed: int) -> list[str]:
    """``count`` distinct users, one per h2load process: ``round(count * unknown_share)``
    never-seen users, the rest known users drawn without replacement (seeded)."""
    rng = np.random.default_rng(seed)
    unknown = min(count, round(count * unknown_share))
    known = [str(u) for u in rng.choice(np.asarray(user_ids), size=count - unknown, replace=False)]
    return known + [f"bench-new-{seed}-{n}" for n in range(unknown)]


# -- h2load's output --------------------------------------------------------------------------------
@dataclass(frozen=True)
class LogRow:
    """One line of ``--log-file``."""

    start_us: int  # wall clock, µs since the epoch
    status: int  # HTTP status; -1: the stream failed
    elapsed_us: int  # request sent → end of response (steady clock)


def parse_log(text: str) -> list[LogRow]:
    """h2load's ``--log-file`` (later versions may add columns: the first three are read)."""
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        columns = line.split("\t")
        try:
            rows.append(LogRow(int(columns[0]), int(columns[1]), int(columns[2])))
        except (IndexError, ValueError):
            raise ValueError(
                f"h2load log line {number} is not start, status, µs: {line!r}"
            ) from None
    return rows


@dataclass(frozen=True)
class Summary:
    """The counts of h2load's closing report."""

    total: int
    started: int
    done: int
    succeeded: int  # answered with a 2xx/3xx status
    failed: int
    errored: int
    timeout: int
    status_2xx: int
    data_bytes: int  # response bodies (DATA frames)


_REQUESTS = re.compile(
    r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored, (\d+) timeout",
    re.M,
)
_STATUS = re.compile(r"^status codes: (\d+) 2xx", re.M)
_TRAFFIC = re.compile(r"^traffic: .*?, \S+ \((\d+)\) data", re.M)


def parse_summary(stdout: str) -> Summary:
    """h2load's report on stdout; ``ValueError`` if it has none (h2load failed to start)."""
    requests, status, traffic = (p.search(stdout) for p in (_REQUESTS, _STATUS, _TRAFFIC))
    if not (requests and status and traffic):
        raise ValueError(f"no h2load report in its output:\n{stdout[-2000:]}")
    total, started, done, succeeded, failed, errored, timeout = map(int, requests.groups())
    return Summary(
        total=total,
        started=started,
        done=done,
        succeeded=succeeded,
        failed=failed,
        errored=errored,
        timeout=timeout,
        status_2xx=int(status.group(1)),
        data_bytes=int(traffic.group(1)),
    )


# -- the plan: one h2load process per connection, one evenly spaced schedule ----------------------
@dataclass(frozen=True)
class ProcessPlan:
    """One h2load process: one connection posting one request body at its turns of the schedule."""

    body: int  # index of the request body it posts
    offsets_s: tuple[float, ...]  # when its requests are due, s after the rate's start
    max_streams: int  # -m, streams in flight on its connection

    @property
    def requests(self) -> int:
        return len(self.offsets_s)

    @property
    def rps(self) -> float:
        """Its ``--rps``: one request per period of its turns."""
        if len(self.offsets_s) < 2:
            return 1.0
        return 1.0 / (self.offsets_s[1] - self.offsets_s[0])


def plan_processes(
    rate: float, seconds: float, bodies: int, connections: int, deadline_s: float
) -> list[ProcessPlan]:
    """``rate * seconds`` requests, due one every ``1 / rate`` s, dealt in turn to
    ``max(bodies, connections)`` processes (fewer if there are fewer requests); process ``i``
    posts body ``i % bodies``, its first request due at ``i / rate``, then one every
    ``processes / rate`` s. ``run_h2load`` starts each process when its first request is due.

    One connection per process, started in turn: ``--rps`` paces each connection from the
    moment it opens, so connections opened together send together, and until 2026-12-04 (all
    processes started at once, several connections each) the server saw bursts of up to one
    request per connection, not a rate (docs/benchmarks/serving.md, section L). ``-m`` covers
    every request a connection can have in flight while answers take up to the deadline (plus
    0.5 s of slack): h2load then never delays a request that is due."""
    total = max(1, round(rate * seconds))
    processes = max(1, min(max(bodies, connections), total))
    streams = max(4, math.ceil(rate / processes * (deadline_s + 0.5)))
    return [
        ProcessPlan(
            index % bodies, tuple(n / rate for n in range(index, total, processes)), streams
        )
        for index in range(processes)
    ]


def h2load_argv(
    executable: str,
    url: str,
    plan: ProcessPlan,
    body_path: Path,
    log_path: Path,
    deadline_s: float,
) -> list[str]:
    argv = [executable, url, "-d", str(body_path), "-t", "1"]
    for header in (*GRPC_HEADERS, f"grpc-timeout: {max(1, round(deadline_s * 1000))}m"):
        argv += ["-H", header]
    argv += ["-c", "1", "-m", str(plan.max_streams), "-n", str(plan.requests)]
    argv += ["--rps", f"{plan.rps:.6g}", "--log-file", str(log_path)]
    return argv


def send_lags_ms(plan: ProcessPlan, rows: list[LogRow], start_us: float) -> list[float]:
    """Each request's send time less its scheduled time (``start_us`` + its offset), ms: how
    closely the process kept the schedule. Rows pair with offsets in send order (h2load logs a
    stream that failed too; one it never started is not logged, and the pairs after it are
    then late by a turn)."""
    sent = sorted(r.start_us for r in rows)
    return [(s - start_us) / 1000 - t * 1000 for s, t in zip(sent, plan.offsets_s, strict=False)]


def h2load_executable() -> str:
    """``h2load`` on ``PATH``, or ``DependencyUnavailable`` saying how to install it."""
    from core.errors import DependencyUnavailable

    path = shutil.which("h2load")
    if path is None:
        raise DependencyUnavailable(
            "h2load", "not on PATH: apt-get install nghttp2-client (or --load python)"
        )
    return path


# -- one rate ---------------------------------------------------------------------------------------
@dataclass
class H2loadResult:
    offered_rps: float
    plans: list[ProcessPlan]
    summaries: list[Summary]
    rows: list[LogRow]
    cpu_s: float  # user + system CPU of the h2load processes
    send_lags_ms: list[float] = field(default_factory=list)  # ``send_lags_ms`` of every request

    @property
    def requests(self) -> int:
        return sum(p.requests for p in self.plans)

    @property
    def succeeded(self) -> int:
        """HTTP answers (2xx): gRPC errors included, h2load cannot tell them apart."""
        return sum(s.succeeded for s in self.summaries)

    @property
    def failed(self) -> int:
        return sum(s.failed for s in self.summaries)

    @property
    def window_s(self) -> float:
        """First request sent → last response ended, and at least the schedule's length (as
        ``serve_load.offered_load`` counts it: ``n`` requests are due over ``(n - 1) / rate``)."""
        scheduled = self.requests / self.offered_rps if self.offered_rps > 0 else 0.0
        if not self.rows:
            return scheduled
        first = min(r.start_us for r in self.rows)
        return max(scheduled, (max(r.start_us + r.elapsed_us for r in self.rows) - first) / 1e6)

    def send_lag_ms(self, q: float) -> float:
        """Percentile ``q`` of the requests' send times less their scheduled times."""
        return float(np.percentile(self.send_lags_ms, q)) if self.send_lags_ms else float("nan")

    def percentile_ms(self, q: float) -> float:
        """Latency of the HTTP answers (2xx), h2load's clock: request sent → response ended."""
        answered = [r.elapsed_us / 1000 for r in self.rows if 200 <= r.status < 300]
        return float(np.percentile(answered, q)) if answered else float("nan")


def run_h2load(
    address: str,
    bodies: list[bytes],
    rate: float,
    seconds: float,
    work: Path,
    *,
    connections: int = 1,
    deadline_s: float = 1.0,
    executable: str | None = None,
) -> H2loadResult:
    """``rate * seconds`` Recommend calls at ``rate``/s, spread over ``plan_processes``' h2load
    processes; returns when every process has finished."""
    from serving.server import RECOMMEND_METHOD

    executable = executable or h2load_executable()
    url = f"http://{address}{RECOMMEND_METHOD}"
    plans = plan_processes(rate, seconds, len(bodies), connections, deadline_s)
    work.mkdir(parents=True, exist_ok=True)
    for index, body in enumerate(bodies[: len(plans)]):
        (work / f"body-{index}.bin").write_bytes(body)
    running = []
    # Children's CPU is counted once they are waited for: h2load's, as the benchmark starts no
    # other child meanwhile (the server child is not waited for until the end).
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start, start_us = time.monotonic(), time.time() * 1e6
    for index, plan in enumerate(plans):
        log = work / f"h2load-{index}.log"
        log.unlink(missing_ok=True)  # h2load appends
        argv = h2load_argv(executable, url, plan, work / f"body-{plan.body}.bin", log, deadline_s)
        time.sleep(max(0.0, start + plan.offsets_s[0] - time.monotonic()))  # its first turn
        process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        running.append((process, plan, log))
    summaries, rows, lags = [], [], []
    for process, plan, log in running:
        try:
            output, _ = process.communicate(timeout=2 * seconds + deadline_s + 60)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
            raise RuntimeError(f"h2load did not finish:\n{output[-2000:]}") from None
        if process.returncode != 0:
            raise RuntimeError(f"h2load exited with {process.returncode}:\n{output[-2000:]}")
        summaries.append(parse_summary(output))
        process_rows = parse_log(log.read_text())
        rows += process_rows
        lags += send_lags_ms(plan, process_rows, start_us)
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    return H2loadResult(rate, plans, summaries, rows, cpu_s, lags)


@dataclass
class H2loadRate:
    """One rate: h2load's load, and the sampled client's checked answers meanwhile."""

    load: H2loadResult
    sampled: LoadResult = field(default_factory=lambda: LoadResult(offered_rps=0.0, sent=0))


def h2load_with_sample(
    address: str,
    bodies: list[bytes],
    sample_users: list[str],
    rate: float,
    seconds: float,
    work: Path,
    *,
    k: int = 10,
    deadline_s: float = 1.0,
    connections: int = 1,
    sample_rps: float = 5.0,
) -> H2loadRate:
    """``run_h2load``, with ``offered_load`` at ``sample_rps`` over ``sample_users`` in a thread
    meanwhile (open loop too), whose answers are checked (status, slate length)."""
    sampled: list[LoadResult] = []
    checker = threading.Thread(
        target=lambda: sampled.append(
            offered_load(address, sample_users, sample_rps, k=k, deadline_s=deadline_s)
        ),
        name="sampled-client",
        daemon=True,
    )
    if sample_users:
        checker.start()
    try:
        load = run_h2load(
            address,
            bodies,
            rate,
            seconds,
            work,
            connections=connections,
            deadline_s=deadline_s,
        )
    finally:
        if sample_users:
            checker.join()
    return H2loadRate(load, sampled[0]) if sampled else H2loadRate(load)
