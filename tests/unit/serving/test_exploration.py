"""Exploration slots: Thompson picks in the last slots, and the propensities logged with them
match how often the policy really puts each item there."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from bandits.posterior import BetaPosterior, PosteriorConfig
from features.ports import InMemoryFeatureStore
from features.rows import UserFeatureRow
from retrieval.catalog import ItemCatalog, ItemMeta
from retrieval.merge import CandidateRetriever, SourcePlan
from retrieval.sources import Candidate, RetrievalRequest
from serving.domain import RecommendationQuery
from serving.exploration_slots import Explorer, InMemoryPosteriorReader, exploration_pool
from serving.impressions import InMemoryImpressionLog
from serving.pipeline import PipelineConfig, RecommendationPipeline, RetrievalState
from serving.ranked import RankedRows
from serving.rerank import ScoredItem

ITEMS = [f"i{n}" for n in range(8)]
CATALOG = ItemCatalog(ItemMeta(i, title=i) for i in [*ITEMS, "new1"])
POSTERIORS = {  # i3..i7 and new1 have no posterior: the prior (1, 1) explores them
    "i2": BetaPosterior(30, 10),
    "i3": BetaPosterior(2, 8),
}


class Ranked:
    name = "ann"

    def candidates(self, request: RetrievalRequest) -> list[Candidate]:
        return [Candidate(i, 1.0, "ann") for i in ITEMS if i not in request.exclusions]


class Fresh:
    name = "fresh"

    def candidates(self, request: RetrievalRequest) -> list[Candidate]:
        return [Candidate("new1", 1.0, "fresh")]


def pipeline_with_exploration(slots: int, pool: int = 4):
    impressions = InMemoryImpressionLog()
    features = InMemoryFeatureStore()
    features.write_users([UserFeatureRow("u", 1, recent_items=("i0",))])
    config = PosteriorConfig()
    pipeline = RecommendationPipeline(
        features=features,
        retrieval=RetrievalState(
            CandidateRetriever([SourcePlan(Ranked(), reserved=8), SourcePlan(Fresh(), reserved=1)]),
            CATALOG,
            as_of_ms=0,
        ),
        ranker=None,
        impressions=impressions,
        config=PipelineConfig(candidates=10, mmr_lambda=1.0, exploration_slots=slots),
        explorer=Explorer(InMemoryPosteriorReader(POSTERIORS, BetaPosterior(1, 1)), config, pool),
    )
    return pipeline, impressions


def test_exploration_takes_the_last_slots_and_ranked_items_keep_propensity_one():
    pipeline, impressions = pipeline_with_exploration(slots=1)
    slate = pipeline.recommend(RecommendationQuery(user_id="u", k=3))
    assert [i.source for i in slate.items][-1] == "explore"
    assert all(i.propensity == 1.0 for i in slate.items[:-1])
    assert 0 < slate.items[-1].propensity < 1
    assert slate.items[-1].item_id not in {i.item_id for i in slate.items[:-1]}
    [logged] = impressions.published
    assert [i.propensity for i in logged.items] == [i.propensity for i in slate.items]


def test_new_items_are_in_the_exploration_pool():
    ranked = [ScoredItem(i, 1.0, "ann") for i in ITEMS] + [ScoredItem("new1", 0.0, "fresh")]
    pool = exploration_pool(RankedRows.of_items(ranked), ranked[:2], size=4)
    assert pool == ["new1", "i2", "i3", "i4"]  # new first, then the best others; none exploited


def test_logged_propensities_match_the_observed_frequencies():
    pipeline, impressions = pipeline_with_exploration(slots=1)
    n = 1500
    for _ in range(n):
        pipeline.recommend(RecommendationQuery(user_id="u", k=3))
    explored = [imp.items[-1] for imp in impressions.published]
    counts = Counter(item.item_id for item in explored)
    logged = {item.item_id: item.propensity for item in explored}
    assert sum(logged.values()) == pytest.approx(1.0, abs=0.02)  # one pool, one slot
    for item_id, propensity in logged.items():
        standard_error = np.sqrt(propensity * (1 - propensity) / n)
        assert counts[item_id] / n == pytest.approx(propensity, abs=4 * standard_error + 0.005)
    assert logged["i2"] > logged.get("i3", 0.0)  # the better posterior is explored more
