"""Per-stage timing, reported by the pipeline itself (``RecommendationPipeline(observer=...)``).

The pipeline times each of its stages, wall time and the thread's CPU time, and tells its
``StageObserver``; the retriever tells it each candidate source's time through the same
observer (``retrieval.merge.SourceTimer``). The stages, in request order:

=================  ===============================================================================
``features``       the user's online features (one batched read)
``user_vector``    the request's user vector (the retriever's encoder; the ranker's when it is one)
``retrieval``      every candidate source, asked in parallel, fused and filtered
``source_<name>``  one candidate source (``source_ann``, ``source_cooccurrence``,
                   ``source_popular``, ``source_fresh``, ``source_content``, and
                   ``source_fallback`` when the never-empty fallback is asked); runs on the
                   retrieval pool, inside ``retrieval``'s wall time
``ranking``        the ranker's scores, or retrieval order (twice for an interleaved request)
``rerank``         business rules, MMR, category caps and pins
``explore``        Thompson exploration slots and the slate's propensities
``explanation``    "because you watched …" for the whole slate
``impression``     the impression built and handed to the producer
=================  ===============================================================================

``PrometheusStageObserver`` (the default) exports them as ``aether_recommend_stage_seconds{stage}``
(histogram of wall time) and ``aether_recommend_stage_cpu_seconds_total{stage}``, and the whole
request as ``aether_recommend_seconds`` and ``aether_recommend_cpu_seconds_total``. Wall time
includes waiting (for the GIL, Redis, Milvus); CPU time does not, so CPU shows what a stage costs.
Because the pipeline reports its stages by name here, a renamed or moved stage is still timed,
and ``tests/unit/serving/test_stage_observer.py`` fails if one stops reporting.
"""

from __future__ import annotations

import time
from typing import Protocol

from prometheus_client import Counter, Histogram

from serving.server_metrics import PIPELINE_CPU, PIPELINE_SECONDS, STAGE_CPU, STAGE_SECONDS

# The stages every request goes through (``source_<name>`` stages come on top, one per source).
PIPELINE_STAGES = (
    "features",
    "user_vector",
    "retrieval",
    "ranking",
    "rerank",
    "explore",
    "explanation",
    "impression",
)
SOURCE_STAGE_PREFIX = "source_"


def source_stage(source_name: str) -> str:
    return SOURCE_STAGE_PREFIX + source_name


class StageObserver(Protocol):
    """Told the time of each stage and of each whole request. Called on the request's thread,
    and for sources on the retrieval pool's threads: implementations must be thread-safe and
    must not raise."""

    def stage(self, name: str, wall_s: float, cpu_s: float) -> None: ...

    def request(self, wall_s: float, cpu_s: float) -> None: ...


class PrometheusStageObserver:
    """The pipeline's default observer: the process-wide Prometheus registry."""

    def __init__(self) -> None:
        self._children: dict[str, tuple[Histogram, Counter]] = {}

    def stage(self, name: str, wall_s: float, cpu_s: float) -> None:
        children = self._children.get(name)
        if children is None:  # a race here only looks the same children up twice
            children = self._children[name] = (
                STAGE_SECONDS.labels(stage=name),
                STAGE_CPU.labels(stage=name),
            )
        seconds, cpu = children
        seconds.observe(wall_s)
        cpu.inc(max(0.0, cpu_s))

    def request(self, wall_s: float, cpu_s: float) -> None:
        PIPELINE_SECONDS.observe(wall_s)
        PIPELINE_CPU.inc(max(0.0, cpu_s))


class timed:  # lower case, like contextlib.suppress: ``with timed(observer, "ranking"):``
    """Times one stage on this thread (wall and thread CPU) and tells the observer."""

    __slots__ = ("_cpu", "_name", "_observer", "_wall")

    def __init__(self, observer: StageObserver, name: str) -> None:
        self._observer, self._name = observer, name
        self._wall = self._cpu = 0.0

    def __enter__(self) -> None:
        self._wall, self._cpu = time.perf_counter(), time.thread_time()

    def __exit__(self, *_exc: object) -> None:
        self._observer.stage(
            self._name, time.perf_counter() - self._wall, time.thread_time() - self._cpu
        )
