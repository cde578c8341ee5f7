"""The server's Prometheus metrics, all in one place (docs/metrics.md, section Server, is the
contract: names, types and labels; alert rules and dashboards are written against it).

Every label is bounded: ``status`` (gRPC code names), ``stage`` (``serving.stage_observer``;
for batch sizes the batch points of ``serving.batching``: ``features``, ``user_vector``, ``ann``,
``cooccurrence``, ``posteriors``),
``reason`` (fallback reasons without their detail), ``source`` (candidate source names, plus
``pinned`` and ``explore`` slots), ``arm`` (experiment arm labels of the loaded configuration,
``none`` outside experiments), ``dependency`` (one breaker per call site), ``model_version``.

``RequestStatusInterceptor`` counts Recommend calls by the status they end with, including the
calls gRPC refuses itself (RESOURCE_EXHAUSTED beyond ``max_concurrent_rpcs``), which no handler
ever sees.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import grpc
from prometheus_client import Counter, Gauge, Histogram

from features.transition_store import StampedNeighbours, TransitionStore
from serving.breaker import STATE_CODES, State

REQUESTS = Counter(
    "aether_recommend_requests", "Recommend calls by the gRPC status they ended with", ["status"]
)
PIPELINE_SECONDS = Histogram(
    "aether_recommend_seconds",
    "Whole pipeline per request, wall time",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
)
PIPELINE_CPU = Counter(
    "aether_recommend_cpu_seconds", "Thread CPU of the pipeline (request thread), summed"
)
STAGE_SECONDS = Histogram(
    "aether_recommend_stage_seconds",
    "Wall time of one pipeline stage",
    ["stage"],
    buckets=(0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
)
STAGE_CPU = Counter(
    "aether_recommend_stage_cpu_seconds",
    "Thread CPU of pipeline stages, summed (per call: divide by the stage's _count)",
    ["stage"],
)
FALLBACKS = Counter("aether_recommend_fallbacks", "Degraded steps, by reason", ["reason"])
CANDIDATES = Counter(
    "aether_recommend_candidates",
    "Candidates handed to the ranker, by the source that contributed most to each",
    ["source"],
)
SLATE_ITEMS = Counter(
    "aether_recommend_slate_items", "Slots served, by the source of the item", ["source"]
)
COOCCURRENCE_ANCHORS = Counter(
    "aether_recommend_cooccurrence_anchors",
    "Co-occurrence anchors asked for: neighbours kept from an earlier read (kept), or read "
    "because written since or not kept yet (read)",
    ["outcome"],
)
TOP_SCORE = Histogram(
    "aether_recommend_top_score",
    "The ranker's top score per ranked request (retrieval order is not a score)",
    # No negative bound: prometheus_client then drops ``_sum`` (no mean). The top of a couple of
    # hundred candidates' scores is rarely ≤ 0; if it is, it lands in the first bucket.
    buckets=(0, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 7.5, 10, 15, 20, 30, 50),
)
BREAKER_STATE = Gauge("aether_breaker_state", "0 closed, 1 half-open, 2 open", ["dependency"])
IMPRESSIONS_PUBLISHED = Counter(
    "aether_impressions_published",
    "Slates published to the impressions topic, by experiment arm",
    ["arm"],
)
IMPRESSIONS_FAILED = Counter(
    "aether_impressions_failed", "Slates that could not be published", ["reason"]
)
IMPRESSIONS_WITHHELD = Counter(
    "aether_impressions_withheld",
    "Slates served but not published: the user opted out, or their marker could not be read",
    ["reason"],
)
BATCH_SIZE = Histogram(
    "aether_serving_batch_size",
    "Requests per micro-batch, one observation per batch (serving.batching), by batch point",
    ["stage"],
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32),
)
MODEL_INFO = Gauge(
    "aether_model_info", "The model version serving now (value 1)", ["model_version"]
)

NO_ARM = "none"  # the arm label of a slate served outside any experiment
_model_lock = threading.Lock()


def arm_label(experiment_arm: str) -> str:
    return experiment_arm or NO_ARM


def fallback_reason(reason: str) -> str:
    """``source_failed:ann`` → ``source_failed``: the detail would not be a bounded label."""
    return reason.split(":", 1)[0]


def set_breaker_state(dependency: str, state: State) -> None:
    BREAKER_STATE.labels(dependency=dependency).set(STATE_CODES[state])


def set_model_version(version: str) -> None:
    """One series, the version serving now (a swap replaces it)."""
    with _model_lock:
        MODEL_INFO.clear()
        MODEL_INFO.labels(model_version=version).set(1)


def count_served(
    reasons: Iterable[str], candidates_by_source: Mapping[str, int], slate_sources: Iterable[str]
) -> None:
    """One answered request: its fallback reasons, candidates and slots by source."""
    for reason in reasons:
        FALLBACKS.labels(reason=fallback_reason(reason)).inc()
    slots = collections.Counter(slate_sources)
    for counter, counts in ((CANDIDATES, candidates_by_source), (SLATE_ITEMS, slots)):
        for source, count in counts.items():
            counter.labels(source=source).inc(count)


class RequestStatusInterceptor(grpc.ServerInterceptor):
    """Counts calls to ``method`` in ``aether_recommend_requests_total{status}``.

    Put it first, so it also counts calls the auth interceptor refuses. ``watch(server)`` once
    the server exists: gRPC refuses a call beyond ``maximum_concurrent_rpcs`` before any handler
    runs (``grpc._server._handle_call``), right after the interceptors were asked for the
    handler, on the same thread and under the same lock; so the refusal is read here from the
    server's own counters. A gRPC release that renames them makes this count nothing rather
    than fail (``tests/integration/serving/test_request_status_metrics.py`` would notice).
    """

    def __init__(self, method: str) -> None:
        self._method = method
        self._server_state: Any = None

    def watch(self, server: grpc.Server) -> None:
        self._server_state = getattr(server, "_state", None)

    def _refused_for_concurrency(self) -> bool:
        state = self._server_state
        limit = getattr(state, "maximum_concurrent_rpcs", None)
        active = getattr(state, "active_rpc_count", None)
        return limit is not None and active is not None and active >= limit

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler_call_details.method != self._method or handler is None:
            return handler
        if self._refused_for_concurrency():
            REQUESTS.labels(status=grpc.StatusCode.RESOURCE_EXHAUSTED.name).inc()
            return handler  # gRPC refuses it next; the handler never runs
        if handler.unary_unary is None:
            return handler
        inner = handler.unary_unary

        def counted(request: Any, context: grpc.ServicerContext) -> Any:
            status = grpc.StatusCode.UNKNOWN  # an exception no interceptor mapped
            try:
                response = inner(request, context)
                status = _code(context) or grpc.StatusCode.OK
                return response
            except BaseException:
                status = _code(context) or grpc.StatusCode.UNKNOWN
                raise
            finally:
                REQUESTS.labels(status=status.name).inc()

        return grpc.unary_unary_rpc_method_handler(
            counted,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _code(context: grpc.ServicerContext) -> grpc.StatusCode | None:
    """The code set on the call (by ``abort`` or ``set_code``), if any."""
    code = getattr(context, "code", lambda: None)()
    return code if isinstance(code, grpc.StatusCode) else None


class CountedTransitions:
    """The stream's transition store as serving reads it, counting in
    ``aether_recommend_cooccurrence_anchors_total`` which anchors' neighbours the co-occurrence
    source kept from an earlier read and which it had to read (``changed_neighbours``): a
    ``read`` share near 1 while the stream is quiet means the stamps are not being written."""

    def __init__(self, store: TransitionStore) -> None:
        self._store = store
        self._kept = COOCCURRENCE_ANCHORS.labels(outcome="kept")
        self._read = COOCCURRENCE_ANCHORS.labels(outcome="read")

    def apply(self, increments: Mapping[tuple[str, str], float]) -> None:
        self._store.apply(increments)

    def neighbours(self, anchors: Sequence[str], n: int) -> dict[str, list[tuple[str, float]]]:
        return self._store.neighbours(anchors, n)

    def changed_neighbours(
        self, anchors: Sequence[str], n: int, held: Sequence[Any]
    ) -> list[StampedNeighbours]:
        answers = self._store.changed_neighbours(anchors, n, held)
        kept = sum(answer.arrays is None for answer in answers)
        if kept:
            self._kept.inc(kept)
        if len(answers) > kept:
            self._read.inc(len(answers) - kept)
        return answers
