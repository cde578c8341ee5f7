"""Maps proto messages to domain types and back; the pipeline does the work."""

from __future__ import annotations

from typing import Protocol

import grpc

from core.settings import ServingSettings
from serving.domain import RecommendationQuery, Slate
from serving.proto import recommender_pb2 as pb
from serving.proto import recommender_pb2_grpc as pb_grpc
from serving.validation import build_query


class RecommendPipeline(Protocol):
    def recommend(self, query: RecommendationQuery, *, deadline_s: float | None) -> Slate: ...


def query_from_proto(request: pb.RecommendRequest, limits: ServingSettings) -> RecommendationQuery:
    filters = request.filters
    return build_query(
        user_id=request.user_id,
        k=request.k,
        context=dict(request.context),
        exclude_item_ids=request.exclude_item_ids,
        include_categories=filters.include_categories,
        exclude_categories=filters.exclude_categories,
        include_unavailable=filters.include_unavailable,
        available_only=filters.available_only,
        limits=limits,
    )


def slate_to_proto(slate: Slate) -> pb.RecommendResponse:
    return pb.RecommendResponse(
        request_id=slate.request_id,
        items=[
            pb.RecommendedItem(
                item_id=item.item_id,
                score=item.score,
                source=item.source,
                explanation=item.explanation,
                propensity=item.propensity,
                team=item.team,
            )
            for item in slate.items
        ],
        model_version=slate.model_version,
        fallback=slate.fallback,
        fallback_reasons=list(slate.fallback_reasons),
        experiment_arm=slate.experiment_arm,
    )


class RecommenderServicer(pb_grpc.RecommenderServicer):
    def __init__(self, pipeline: RecommendPipeline, limits: ServingSettings) -> None:
        self._pipeline = pipeline
        self._limits = limits

    def Recommend(
        self, request: pb.RecommendRequest, context: grpc.ServicerContext
    ) -> pb.RecommendResponse:
        remaining = context.time_remaining()
        if (
            remaining is not None and remaining <= 0
        ):  # queued past its deadline: don't work for nobody
            context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed before the call started"
            )
        query = query_from_proto(request, self._limits)
        slate = self._pipeline.recommend(query, deadline_s=remaining)
        return slate_to_proto(slate)
