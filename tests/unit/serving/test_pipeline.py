"""The request pipeline against in-memory fakes of the project's own interfaces."""

from __future__ import annotations

import numpy as np

from aether.errors import DependencyUnavailable
from features.ports import InMemoryFeatureStore
from features.rows import UserFeatureRow
from retrieval.catalog import ItemCatalog, ItemMeta
from retrieval.merge import CandidateRetriever, SourcePlan
from retrieval.sources import Candidate, RetrievalRequest
from serving.domain import RecommendationQuery
from serving.impressions import InMemoryImpressionLog
from serving.pipeline import PipelineConfig, RecommendationPipeline, RetrievalState

CATALOG = ItemCatalog(
    ItemMeta(f"i{n}", title=f"Movie {n}", categories=("Drama",)) for n in range(20)
)


class ListSource:
    """Returns a fixed ranking, honouring exclusions, like every real source must."""

    def __init__(self, name: str, items: list[str]) -> None:
        self.name = name
        self.items = items

    def candidates(self, request: RetrievalRequest) -> list[Candidate]:
        kept = [i for i in self.items if i not in request.exclusions]
        return [Candidate(i, 1.0 / (r + 1), self.name) for r, i in enumerate(kept[: request.k])]


class BrokenSource(ListSource):
    def candidates(self, request: RetrievalRequest) -> list[Candidate]:
        raise DependencyUnavailable("milvus", "down")


class ReverseRanker:
    model_version = "reverse-v1"

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def score(self, history, candidates):
        if self.fail:
            raise RuntimeError("model exploded")
        return np.arange(len(candidates), dtype=np.float32)  # last candidate scores best

    def score_batch(self, histories, candidates):
        return [self.score(h, c) for h, c in zip(histories, candidates, strict=True)]


class BrokenFeatures(InMemoryFeatureStore):
    def read_users(self, user_ids):
        raise DependencyUnavailable("redis", "connection refused")


def make(features=None, sources=None, ranker=None):
    features = features or InMemoryFeatureStore()
    sources = sources or [ListSource("ann", [f"i{n}" for n in range(10)])]
    impressions = InMemoryImpressionLog()
    pipeline = RecommendationPipeline(
        features=features,
        retrieval=RetrievalState(
            retriever=CandidateRetriever(
                [SourcePlan(s) for s in sources],
                fallback=ListSource("popular", [f"i{n}" for n in range(19, -1, -1)]),
            ),
            catalog=CATALOG,
        ),
        ranker=ranker,
        impressions=impressions,
        config=PipelineConfig(candidates=10),
        clock_ms=lambda: 1_700_000_000_000,
    )
    return pipeline, features, impressions


def query(user="u1", k=3, exclude=()):
    return RecommendationQuery(user_id=user, k=k, exclude_item_ids=frozenset(exclude))


def test_seen_dismissed_and_excluded_items_never_come_back():
    pipeline, features, _ = make()
    features.write_users(
        [UserFeatureRow("u1", 1, recent_items=("i0", "i1"), dismissed_items=("i2",))]
    )
    slate = pipeline.recommend(query(k=5, exclude={"i3"}))
    ids = [i.item_id for i in slate.items]
    assert len(ids) == 5 and not {"i0", "i1", "i2", "i3"} & set(ids)
    assert not slate.fallback


def test_ranker_orders_the_candidates_and_explanations_name_history_titles():
    pipeline, features, _ = make(ranker=ReverseRanker())
    features.write_users([UserFeatureRow("u1", 1, recent_items=("i0",))])
    slate = pipeline.recommend(query(k=3))
    assert slate.model_version == "reverse-v1"
    assert {i.source for i in slate.items} == {"ann", "popular"}
    scores = [i.score for i in slate.items]
    assert scores == sorted(scores, reverse=True)
    by_source = {i.source: i.explanation for i in slate.items}
    assert by_source["popular"] == "trending now"
    assert by_source["ann"] == "because you watched Movie 0"


def test_unknown_user_gets_a_non_personalised_answer():
    pipeline, _, _ = make(ranker=ReverseRanker())
    slate = pipeline.recommend(query(user="stranger", k=4))
    assert len(slate.items) == 4
    assert slate.model_version == "reverse-v1"


def test_ranker_failure_falls_back_to_retrieval_order():
    pipeline, features, _ = make(ranker=ReverseRanker(fail=True))
    features.write_users([UserFeatureRow("u1", 1, recent_items=("i0",))])
    slate = pipeline.recommend(query(k=3))
    assert [i.item_id for i in slate.items] == ["i1", "i2", "i3"]
    assert slate.fallback and "ranker_failed" in slate.fallback_reasons


def test_feature_store_outage_still_answers():
    pipeline, _, _ = make(features=BrokenFeatures())
    slate = pipeline.recommend(query(k=3))
    assert len(slate.items) == 3
    assert slate.fallback_reasons == ("features_unavailable",)


def test_failed_source_is_reported_and_others_answer():
    pipeline, _, _ = make(sources=[BrokenSource("ann", []), ListSource("cooc", ["i5", "i6", "i7"])])
    slate = pipeline.recommend(query(k=3))
    assert [i.item_id for i in slate.items][:3] == ["i5", "i6", "i7"]
    assert "source_failed:ann" in slate.fallback_reasons


def test_every_slate_is_logged_as_an_impression():
    pipeline, features, impressions = make()
    features.write_users([UserFeatureRow("u1", 1, recent_items=("i0",))])
    slate = pipeline.recommend(query(k=3))
    [logged] = impressions.published
    assert logged.request_id == slate.request_id and logged.user_id == "u1"
    assert [(i.item_id, i.position) for i in logged.items] == [
        (item.item_id, n) for n, item in enumerate(slate.items)
    ]
    assert logged.model_version == slate.model_version
    assert logged.event_time_ms == 1_700_000_000_000
