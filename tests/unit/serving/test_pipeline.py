"""The request pipeline against in-memory fakes of the project's own interfaces."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import DependencyUnavailable, SchemaError
from features.ports import InMemoryFeatureStore
from features.rows import UserFeatureRow
from retrieval.catalog import ItemCatalog, ItemMeta
from retrieval.merge import CandidateRetriever, SourcePlan
from retrieval.sources import Candidate, RetrievalRequest
from serving.domain import Filters, RecommendationQuery
from serving.experiments import Experiments
from serving.impressions import InMemoryImpressionLog
from serving.pipeline import PipelineConfig, RecommendationPipeline, RetrievalState
from serving.rules import Rules
from serving.seen_items import InMemorySeenItems

CATALOG = ItemCatalog(
    ItemMeta(f"i{n}", title=f"Movie {n}", categories=("Drama",) if n % 2 else ("Comedy",))
    for n in range(20)
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


def make(
    features=None,
    sources=None,
    ranker=None,
    rules=None,
    experiments=None,
    mmr_lambda=1.0,
    user_encoder=None,
    arm_rankers=None,
    seen=None,
):
    features = features or InMemoryFeatureStore()
    sources = sources or [ListSource("ann", [f"i{n}" for n in range(10)])]
    impressions = InMemoryImpressionLog()
    pipeline = RecommendationPipeline(
        features=features,
        retrieval=RetrievalState(
            retriever=CandidateRetriever(
                [SourcePlan(s) for s in sources],
                catalog=CATALOG,
                fallback=ListSource("popular", [f"i{n}" for n in range(19, -1, -1)]),
            ),
            catalog=CATALOG,
        ),
        ranker=ranker,
        impressions=impressions,
        config=PipelineConfig(candidates=10, mmr_lambda=mmr_lambda),
        rules=rules,
        experiments=experiments,
        user_encoder=user_encoder,
        clock_ms=lambda: 1_700_000_000_000,
        arm_rankers=arm_rankers,
        seen=seen,
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


class BrokenSeenItems:
    def seen_among(self, user_id, item_ids):
        raise DependencyUnavailable("redis", "connection refused")

    def members_if_at_most(self, user_id, limit):
        raise DependencyUnavailable("redis", "connection refused")


class LargeSeenItems(InMemorySeenItems):
    """Every set counts as too large to read whole: candidates are asked about instead."""

    def members_if_at_most(self, user_id, limit):
        return None


@pytest.mark.parametrize("kind", [InMemorySeenItems, LargeSeenItems])
def test_items_seen_long_ago_never_come_back_though_the_row_forgot_them(kind):
    # i1 and i4 left the row's recent_items long ago; the seen set still holds them
    seen = kind({"u1": {"i1", "i4", "i0"}})
    pipeline, features, _ = make(seen=seen)
    features.write_users([UserFeatureRow("u1", 1, recent_items=("i0",))])
    slate = pipeline.recommend(query(k=5))
    ids = [i.item_id for i in slate.items]
    assert ids == ["i2", "i3", "i5", "i6", "i7"] and not slate.fallback
    other = pipeline.recommend(query(user="u2", k=2))  # another user's set is not theirs
    assert [i.item_id for i in other.items] == ["i0", "i1"]


def test_an_unreadable_seen_set_serves_the_row_exclusions_flagged():
    pipeline, features, _ = make(seen=BrokenSeenItems())
    features.write_users([UserFeatureRow("u1", 1, recent_items=("i0",))])
    slate = pipeline.recommend(query(k=3))
    assert [i.item_id for i in slate.items] == ["i1", "i2", "i3"]
    assert slate.fallback_reasons == ("seen_items_unavailable",)


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


class HistoryRecorder(ReverseRanker):
    """Records the history each call scored with; ``keeps_dismissed`` as a checkpoint says."""

    def __init__(self, keeps_dismissed: bool) -> None:
        super().__init__()
        self.keeps_dismissed = keeps_dismissed
        self.histories: list[tuple[str, ...]] = []

    def score(self, history, candidates):
        self.histories.append(tuple(history))
        return super().score(history, candidates)


@pytest.mark.parametrize(
    ("keeps_dismissed", "row_interactions", "expected"),
    [
        (True, ("i0", "i5", "i1"), ("i0", "i5", "i1")),  # trained on every interaction
        (False, ("i0", "i5", "i1"), ("i0", "i1")),  # trained with --dismissals
        (True, (), ("i0", "i1")),  # a row written before recent_interactions existed
    ],
)
def test_the_ranker_reads_the_history_it_was_trained_on(
    keeps_dismissed, row_interactions, expected
):
    ranker = HistoryRecorder(keeps_dismissed)
    pipeline, features, _ = make(ranker=ranker)
    row = UserFeatureRow(
        "u1",
        1,
        recent_items=("i0", "i1"),
        dismissed_items=("i5",),
        recent_interactions=row_interactions,
    )
    features.write_users([row])
    slate = pipeline.recommend(query(k=3))
    assert ranker.histories == [expected]
    # Exclusions and explanations stay on the product's history: i5 is dismissed, never served.
    assert not {"i0", "i1", "i5"} & {i.item_id for i in slate.items}


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


EXPERIMENTS = Experiments.from_dict(
    {
        "version": 1,
        "experiments": [
            {
                "name": "ranker",
                "salt": "s",
                "arms": [
                    {"name": "sasrec", "weight": 1, "params": {"ranker": "sasrec"}},
                    {"name": "popularity", "weight": 1, "params": {"ranker": "popularity"}},
                ],
            }
        ],
    }
)


def test_the_experiment_arm_decides_the_ranker_and_is_logged():
    pipeline, features, impressions = make(ranker=ReverseRanker(), experiments=EXPERIMENTS)
    features.write_users([UserFeatureRow("u1", 1, recent_items=("i0",))])
    forced = {"experiment.ranker": "popularity"}
    slate = pipeline.recommend(RecommendationQuery(user_id="u1", k=3, context=forced))
    assert slate.experiment_arm == "ranker=popularity"
    assert slate.model_version == "retrieval-only"
    assert [i.item_id for i in slate.items] == ["i1", "i2", "i3"]  # retrieval order
    sasrec = pipeline.recommend(
        RecommendationQuery(user_id="u1", k=3, context={"experiment.ranker": "sasrec"})
    )
    assert sasrec.model_version == "reverse-v1"
    assert [i.experiment_arm for i in impressions.published] == [
        "ranker=popularity",
        "ranker=sasrec",
    ]


def test_an_unknown_arm_is_an_invalid_argument():
    pipeline, _, _ = make(experiments=EXPERIMENTS)
    with pytest.raises(SchemaError) as info:
        pipeline.recommend(
            RecommendationQuery(user_id="u1", k=3, context={"experiment.ranker": "nope"})
        )
    assert info.value.reason == "invalid_argument"


def test_excluded_categories_never_reach_the_slate():
    pipeline, _, _ = make()
    query_ = RecommendationQuery(
        user_id="u1", k=5, filters=Filters(exclude_categories=frozenset({"Comedy"}))
    )
    slate = pipeline.recommend(query_)
    assert len(slate.items) == 5
    assert all(int(i.item_id[1:]) % 2 == 1 for i in slate.items)


def test_rules_filter_and_pin_items():
    rules = Rules.from_dict(
        {
            "version": 1,
            "filters": {"exclude_item_ids": ["i1"]},
            "pins": [{"item_id": "i9", "position": 0}],
        }
    )
    pipeline, _, _ = make(rules=rules)
    slate = pipeline.recommend(query(k=4))
    ids = [i.item_id for i in slate.items]
    assert ids[0] == "i9" and slate.items[0].source == "pinned"
    assert "i1" not in ids and len(ids) == 4


def test_mmr_spreads_the_slate_over_categories():
    comedies_first = ListSource("ann", ["i0", "i2", "i4", "i6", "i8", "i1", "i3", "i5", "i7", "i9"])
    plain, _, _ = make(sources=[comedies_first], mmr_lambda=1.0)
    diverse, _, _ = make(sources=[comedies_first], mmr_lambda=0.3)

    def comedies(slate):
        return sum(int(i.item_id[1:]) % 2 == 0 for i in slate.items)

    assert comedies(plain.recommend(query(k=4))) == 4
    assert comedies(diverse.recommend(query(k=4))) < 4


INTERLEAVED = Experiments.from_dict(
    {
        "experiments": [
            {
                "name": "ranker",
                "salt": "s",
                "arms": [
                    {"name": "sasrec", "weight": 1, "params": {"ranker": "sasrec"}},
                    {
                        "name": "ab",
                        "weight": 1,
                        "params": {"interleave": ["sasrec", "popularity"]},
                    },
                ],
            }
        ]
    }
)


def test_an_interleaving_arm_drafts_both_rankers_and_logs_each_slot_team():
    from serving.interleaving import INTERLEAVING_CONTEXT_KEY, decode_teams, seed_for, team_draft

    pipeline, features, impressions = make(ranker=ReverseRanker(), experiments=INTERLEAVED)
    features.write_users([UserFeatureRow("u1", 1, recent_items=("i0",))])
    forced = {"experiment.ranker": "ab", "device": "tv"}
    slate = pipeline.recommend(RecommendationQuery(user_id="u1", k=6, context=forced))

    assert slate.experiment_arm == "ranker=ab"
    assert slate.model_version == "interleaved(reverse-v1,retrieval-only)"
    ids = [i.item_id for i in slate.items]
    teams = [i.team for i in slate.items]
    # Candidates: i1..i9 from "ann" (i0 was seen), then i19 from the popular fallback.
    # A = the model (ReverseRanker: last candidate best), B = retrieval order.
    retrieval_order = [f"i{n}" for n in range(1, 10)] + ["i19"]
    model_order = retrieval_order[::-1]
    assert team_draft(model_order, retrieval_order, 6, seed=seed_for(slate.request_id)).items == (
        tuple(ids)
    )
    assert set(teams) == {"A", "B"} and abs(teams.count("A") - teams.count("B")) <= 1
    for item, team in zip(slate.items, teams, strict=True):
        own = model_order if team == "A" else retrieval_order
        earlier = own[: own.index(item.item_id)]
        assert set(earlier) <= set(ids[: ids.index(item.item_id)])  # each team picks its best
    [logged] = impressions.published
    assert logged.context["device"] == "tv"
    assert decode_teams(logged.context[INTERLEAVING_CONTEXT_KEY]) == tuple(teams)
    plain = pipeline.recommend(RecommendationQuery(user_id="u1", k=3, context={}))
    assert plain.experiment_arm == "ranker=sasrec" or all(i.team for i in plain.items)


def test_pinned_items_in_an_interleaved_slate_credit_no_team():
    rules = Rules.from_dict({"pins": [{"item_id": "i15", "position": 0}]})
    pipeline, features, impressions = make(
        ranker=ReverseRanker(), experiments=INTERLEAVED, rules=rules
    )
    features.write_users([UserFeatureRow("u1", 1, recent_items=("i0",))])
    slate = pipeline.recommend(
        RecommendationQuery(user_id="u1", k=4, context={"experiment.ranker": "ab"})
    )
    assert slate.items[0].item_id == "i15" and slate.items[0].team == ""
    assert all(i.team in {"A", "B"} for i in slate.items[1:])
    assert impressions.published[0].context["interleaving.teams"][0] == "-"


@pytest.mark.parametrize(
    "params",
    [
        {"interleave": ["sasrec", "sasrec"]},
        {"interleave": ["sasrec", "popularity"], "ranker": "sasrec"},
    ],
)
def test_interleaving_arms_are_validated_when_loaded(params):
    from core.errors import ConfigError

    with pytest.raises(ConfigError):
        Experiments.from_dict(
            {
                "experiments": [
                    {
                        "name": "x",
                        "salt": "s",
                        "arms": [{"name": "a", "weight": 1, "params": params}],
                    }
                ]
            }
        )


class VectorSource(ListSource):
    """Records the user vector each request brought (what ANN and content sources use)."""

    def __init__(self, name: str, items: list[str]) -> None:
        super().__init__(name, items)
        self.vectors: list[np.ndarray | None] = []

    def candidates(self, request: RetrievalRequest) -> list[Candidate]:
        self.vectors.append(request.user_vector)
        return super().candidates(request)


class EncodingRanker:
    """A two-tower-style ranker (score = item vector · user vector) that counts its passes."""

    model_version = "encoding-v1"

    def __init__(self) -> None:
        self.encoded = 0
        self.scored = 0
        self.item_ids = [f"i{n}" for n in range(20)]
        self.matrix = np.eye(20, 4, dtype=np.float32) + np.arange(20, dtype=np.float32)[:, None]

    def encode_user(self, history):
        self.encoded += 1
        return np.array([1.0, -1.0, 0.5, float(len(history))], dtype=np.float32)

    def item_embeddings(self):
        return self.item_ids, self.matrix

    def score(self, history, candidates):
        self.scored += 1
        rows = [self.item_ids.index(c) for c in candidates]
        return self.matrix[rows] @ self.encode_user(history)

    def score_batch(self, histories, candidates):
        return [self.score(h, c) for h, c in zip(histories, candidates, strict=True)]


def test_the_user_is_encoded_once_for_retrieval_and_ranking():
    ranker = EncodingRanker()
    ann = VectorSource("ann", [f"i{n}" for n in range(10)])
    pipeline, features, _ = make(sources=[ann], ranker=ranker, user_encoder=ranker)
    features.write_users([UserFeatureRow("u1", 1, recent_items=("i0", "i1"))])
    slate = pipeline.recommend(query(k=4))

    assert (ranker.encoded, ranker.scored) == (1, 0)  # one pass, reused for the scores
    np.testing.assert_array_equal(ann.vectors[0], ranker.encode_user(("i0", "i1")))
    candidates = [f"i{n}" for n in range(2, 10)] + ["i19", "i18"]  # + the popular fallback
    expected = ranker.matrix[[ranker.item_ids.index(c) for c in candidates]] @ ann.vectors[0]
    best = [candidates[i] for i in np.argsort(-expected, kind="stable")[:4]]
    assert [i.item_id for i in slate.items] == best
    assert slate.model_version == "encoding-v1"


def test_another_encoder_is_run_once_and_the_ranker_scores_for_itself():
    ranker, encoder = EncodingRanker(), EncodingRanker()
    ann = VectorSource("ann", [f"i{n}" for n in range(10)])
    pipeline, features, _ = make(sources=[ann], ranker=ranker, user_encoder=encoder)
    features.write_users([UserFeatureRow("u1", 1, recent_items=("i0",))])
    pipeline.recommend(query(k=3))
    assert encoder.encoded == 1 and ann.vectors[0] is not None
    assert ranker.scored == 1  # its own score(): the vector is in another model's space


def test_a_failing_encoder_degrades_to_the_sources_own_encoding():
    class Broken(EncodingRanker):
        def encode_user(self, history):
            raise RuntimeError("encoder exploded")

    pipeline, features, _ = make(user_encoder=Broken())
    features.write_users([UserFeatureRow("u1", 1, recent_items=("i0",))])
    slate = pipeline.recommend(query(k=3))
    assert len(slate.items) == 3 and "encoder_failed" in slate.fallback_reasons


class ForwardRanker(ReverseRanker):
    model_version = "forward-v2"

    def score(self, history, candidates):
        return -np.arange(len(candidates), dtype=np.float32)  # first candidate scores best


def _model_arms() -> Experiments:
    arms = [
        {"name": "current", "weight": 1, "params": {"ranker": "sasrec"}},
        {"name": "candidate", "weight": 1, "params": {"ranker": "sasrec@forward-v2"}},
    ]
    return Experiments.from_dict({"experiments": [{"name": "m", "salt": "s", "arms": arms}]})


def test_an_arm_ranks_with_the_registered_model_it_names():
    pipeline, features, _ = make(
        ranker=ReverseRanker(),
        experiments=_model_arms(),
        arm_rankers={"forward-v2": ForwardRanker()},
    )
    features.write_users([UserFeatureRow("u1", 1, recent_items=("i15",))])
    current = pipeline.recommend(
        RecommendationQuery(user_id="u1", k=3, context={"experiment.m": "current"})
    )
    candidate = pipeline.recommend(
        RecommendationQuery(user_id="u1", k=3, context={"experiment.m": "candidate"})
    )
    assert current.model_version == "reverse-v1" and candidate.model_version == "forward-v2"
    assert [i.item_id for i in candidate.items] == ["i0", "i1", "i2"]
    assert [i.item_id for i in current.items] == ["i9", "i8", "i7"]


def test_a_pipeline_refuses_arms_whose_models_it_was_not_given():
    with pytest.raises(ValueError, match="forward-v2"):
        make(ranker=ReverseRanker(), experiments=_model_arms())
