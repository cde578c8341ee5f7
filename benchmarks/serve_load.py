"""The load of ``aether bench serve`` (``benchmarks.serve``): open-loop requests over real gRPC
(``offered_load``), and the pipeline called in this process one request at a time
(``pipeline_cpu``)."""

from __future__ import annotations

import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.settings import Settings


@dataclass
class LoadResult:
    offered_rps: float
    sent: int
    latencies_ms: list[float] = field(default_factory=list)  # successful calls only
    codes: Counter[str] = field(default_factory=Counter)
    fallbacks: int = 0
    fallback_reasons: Counter[str] = field(default_factory=Counter)
    model_versions: Counter[str] = field(default_factory=Counter)
    short_slates: int = 0
    empty_slates: int = 0
    elapsed_s: float = 0.0
    client_cpu_s: float = 0.0

    @property
    def ok(self) -> int:
        return self.codes.get("OK", 0)

    @property
    def achieved_rps(self) -> float:
        return self.ok / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


def request_users(user_ids: list[str], count: int, unknown_share: float, seed: int) -> list[str]:
    """``count`` user ids: known users drawn uniformly, and ``unknown_share`` never-seen ones."""
    rng = np.random.default_rng(seed)
    known = rng.choice(np.asarray(user_ids), size=count)
    unknown = rng.random(count) < unknown_share
    return [f"bench-new-{seed}-{n}" if unknown[n] else str(known[n]) for n in range(count)]


def offered_load(
    address: str,
    users: list[str],
    rate: float,
    *,
    k: int = 10,
    deadline_s: float = 1.0,
    max_in_flight: int = 1000,
    channels: int = 1,
) -> LoadResult:
    """Send one request per user at ``rate``/s on a fixed schedule (open loop); wait for all.

    ``channels`` > 1: requests go round-robin over that many connections (each channel gets a
    local subchannel pool, so they do not share one connection); with several server processes
    on one port, the kernel spreads connections, not requests."""
    import grpc

    from serving.proto import recommender_pb2 as pb
    from serving.proto import recommender_pb2_grpc as pb_grpc

    result = LoadResult(offered_rps=rate, sent=0)
    lock = threading.Lock()
    in_flight = [0]
    done = threading.Event()
    last_done = [0.0]

    def finished(scheduled: float, future: grpc.Future) -> None:
        now = time.perf_counter()
        code = future.code()
        with lock:
            in_flight[0] -= 1
            last_done[0] = max(last_done[0], now)
            result.codes[code.name] += 1
            if code is grpc.StatusCode.OK:
                reply = future.result()
                result.latencies_ms.append((now - scheduled) * 1000)
                result.fallbacks += bool(reply.fallback)
                result.fallback_reasons.update(reply.fallback_reasons)
                result.model_versions[reply.model_version] += 1
                result.short_slates += len(reply.items) < k
                result.empty_slates += not reply.items
            if in_flight[0] == 0 and result.sent == len(users):
                done.set()

    opened = [
        grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(max(1, channels))
    ]
    stubs = [pb_grpc.RecommenderStub(channel) for channel in opened]
    requests = [pb.RecommendRequest(user_id=user, k=k) for user in users]
    cpu_before = time.process_time()
    started = time.perf_counter() + 0.01
    try:
        for n, request in enumerate(requests):
            scheduled = started + n / rate
            pause = scheduled - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            with lock:
                if in_flight[0] >= max_in_flight:
                    result.codes["CLIENT_OVERLOADED"] += 1
                    result.sent += 1
                    continue
                in_flight[0] += 1
                result.sent += 1
            stub = stubs[n % len(stubs)]
            future = stub.Recommend.future(request, timeout=deadline_s)
            future.add_done_callback(lambda f, s=scheduled: finished(s, f))
        with lock:
            if in_flight[0] == 0:
                done.set()
        done.wait(deadline_s + 10)
    finally:
        for channel in opened:
            channel.close()
    result.elapsed_s = max(last_done[0], started + len(users) / rate) - started
    result.client_cpu_s = time.process_time() - cpu_before
    return result


def pipeline_cpu(
    settings: Settings, checkpoint: Path | None, users: list[str], *, k: int = 10, blocks: int = 6
) -> dict[str, float]:
    """Process CPU per request of the pipeline in this process, one request at a time (no gRPC, no
    concurrency): as wired (the user encoded once per request, ``serving.user_vector``), and with
    every consumer encoding the user for itself (the ANN source, and the ranker's ``score``: the
    path before that change). The two alternate in ``blocks`` blocks each, after a warm-up, so
    that a shared machine's drift hits both alike; the figures are the medians of the blocks."""
    import statistics

    from retrieval.milvus_lite import release_milvus_lite
    from serving.build_pipeline import build_serving_app
    from serving.domain import RecommendationQuery

    missing = Path(tempfile.gettempdir()) / f"no-ranker-{uuid.uuid4().hex}.pt"
    app = build_serving_app(settings, checkpoint=checkpoint or missing)
    pipeline = app.pipeline
    # An A/B of two wirings of the same pipeline, not a timer: the attributes must exist, or
    # both modes would silently measure the same path.
    shared = {"_user_encoder": pipeline._user_encoder, "_vector_scorer": pipeline._vector_scorer}
    modes = {"once": shared, "per_consumer": dict.fromkeys(shared)}
    size = max(1, len(users) // (2 * blocks + 1))
    cpu_ms: dict[str, list[float]] = {mode: [] for mode in modes}
    try:
        for user in users[:size]:  # warm-up
            pipeline.recommend(RecommendationQuery(user_id=user, k=k))
        for block in range(2 * blocks):
            mode = list(modes)[block % 2]
            for attribute, value in modes[mode].items():
                setattr(pipeline, attribute, value)
            batch = users[(block + 1) * size : (block + 2) * size]
            started = time.process_time()
            for user in batch:
                pipeline.recommend(RecommendationQuery(user_id=user, k=k))
            cpu_ms[mode].append(1000 * (time.process_time() - started) / len(batch))
    finally:
        app.close()
        release_milvus_lite(settings.milvus.uri)  # the server process opens the file next
    return {
        "pipeline_cpu_ms_per_request": round(statistics.median(cpu_ms["once"]), 2),
        "pipeline_cpu_ms_per_request_encoding_per_consumer": round(
            statistics.median(cpu_ms["per_consumer"]), 2
        ),
        "pipeline_requests_per_block": size,
    }
