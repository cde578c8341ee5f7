"""The request pipeline: features → retrieval → ranking → slate → explanation → impression.

One batched online-feature read for the user, one for the titles used in explanations; candidate
retrieval through ``retrieval.merge.CandidateRetriever`` (never empty while eligible items
remain); ranker scores when the user has a history, retrieval order otherwise. Every degraded
step is recorded in ``Slate.fallback_reasons`` and counted, never raised.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from prometheus_client import Counter, Histogram

from aether.errors import AetherError
from events import Impression, ImpressionItem
from features.ports import OnlineFeatureReader
from features.rows import UserFeatureRow
from ranker.scoring import Ranker
from retrieval.catalog import ItemCatalog
from retrieval.merge import CandidateRetriever
from retrieval.sources import Candidate, CandidateFilters, Exclusions, RetrievalRequest
from serving.domain import RecommendationQuery, Slate, SlateItem
from serving.explain import explain
from serving.impressions import ImpressionLog

log = logging.getLogger(__name__)

REQUESTS = Counter("aether_recommend_requests_total", "Recommend calls answered")
FALLBACKS = Counter("aether_recommend_fallbacks_total", "Degraded steps", ["reason"])
LATENCY = Histogram(
    "aether_recommend_seconds",
    "Pipeline latency",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
)


@dataclass(frozen=True)
class PipelineConfig:
    candidates: int = 200
    model_version: str = "retrieval-only"


@dataclass(frozen=True)
class RetrievalState:
    """What the pipeline retrieves with; replaced as a whole when the catalogue is refreshed."""

    retriever: CandidateRetriever
    catalog: ItemCatalog  # in-process item metadata: titles for explanations, filters
    as_of_ms: int | None = None  # event-time "now" of the catalogue (None: the serving clock)


class RecommendationPipeline:
    def __init__(
        self,
        *,
        features: OnlineFeatureReader,
        retrieval: RetrievalState,
        ranker: Ranker | None,
        impressions: ImpressionLog,
        config: PipelineConfig = PipelineConfig(),
        item_vectors: Mapping[str, np.ndarray] | None = None,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self._features = features
        self.retrieval = retrieval  # swapped atomically by the catalogue refresher
        self._ranker = ranker
        self._impressions = impressions
        self._config = config
        self._item_vectors = item_vectors
        self._clock_ms = clock_ms  # serving time of the impression, never a feature value

    @property
    def model_version(self) -> str:
        return (
            self._ranker.model_version if self._ranker is not None else self._config.model_version
        )

    def recommend(self, query: RecommendationQuery, *, deadline_s: float | None = None) -> Slate:
        started = time.perf_counter()
        reasons: list[str] = []
        retrieval = self.retrieval
        user = self._read_user(query.user_id, reasons)
        history = user.recent_items if user else ()
        request = RetrievalRequest(
            k=max(self._config.candidates, query.k),
            history=history,
            exclusions=Exclusions(
                seen=frozenset(history),
                dismissed=frozenset(user.dismissed_items) if user else frozenset(),
                request=query.exclude_item_ids,
            ),
            filters=CandidateFilters(
                categories=query.filters.include_categories,
                available_only=query.filters.available_only,
            ),
            as_of_ms=retrieval.as_of_ms if retrieval.as_of_ms is not None else self._clock_ms(),
            user_id=query.user_id,
        )
        result = retrieval.retriever.retrieve(request)
        reasons.extend(f"source_failed:{name}" for name in result.failed_sources)
        ranked = self._rank(history, result.candidates, reasons)[: query.k]
        titles = {i: m.title for i in history[-50:] if (m := retrieval.catalog.get(i)) and m.title}
        items = tuple(
            SlateItem(
                item_id=c.item_id,
                score=float(score),
                source=c.source,
                explanation=explain(c.item_id, c.source, history, titles, self._item_vectors),
            )
            for c, score in ranked
        )
        slate = Slate(
            request_id=uuid.uuid4().hex,
            items=items,
            model_version=self.model_version,
            fallback=bool(reasons),
            fallback_reasons=tuple(reasons),
        )
        self._log_impression(query, slate)
        for reason in reasons:
            FALLBACKS.labels(reason=reason.split(":")[0]).inc()
        REQUESTS.inc()
        LATENCY.observe(time.perf_counter() - started)
        return slate

    def _read_user(self, user_id: str, reasons: list[str]) -> UserFeatureRow | None:
        try:
            return self._features.read_users([user_id]).get(user_id)
        except AetherError as exc:
            log.warning("user features unavailable: %s", exc)
            reasons.append("features_unavailable")
            return None

    def _rank(
        self, history: Sequence[str], candidates: Sequence[Candidate], reasons: list[str]
    ) -> list[tuple[Candidate, float]]:
        retrieval_order = [(c, float(len(candidates) - i)) for i, c in enumerate(candidates)]
        if self._ranker is None or not history or not candidates:
            return retrieval_order
        try:
            scores = self._ranker.score(history, [c.item_id for c in candidates])
        except Exception:  # a broken model must not take the slate down
            log.exception("ranker failed; serving retrieval order")
            reasons.append("ranker_failed")
            return retrieval_order
        order = np.argsort(-np.asarray(scores), kind="stable")
        return [(candidates[i], float(scores[i])) for i in order]

    def _log_impression(self, query: RecommendationQuery, slate: Slate) -> None:
        impression = Impression(
            event_time=self._clock_ms(),
            request_id=slate.request_id,
            user_id=query.user_id,
            items=tuple(
                ImpressionItem(
                    item_id=item.item_id,
                    position=position,
                    score=item.score,
                    source=item.source,
                    propensity=item.propensity,
                )
                for position, item in enumerate(slate.items)
            ),
            model_version=slate.model_version,
            experiment_arm=slate.experiment_arm,
            fallback=slate.fallback,
            context=query.context,
        )
        self._impressions.publish(impression)
