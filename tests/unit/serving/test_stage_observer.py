"""The pipeline times its own stages (``serving.stage_observer``): every stage of every request
reaches the observer, each candidate source included, and the default observer exports them."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from prometheus_client import REGISTRY

from bandits.posterior import BetaPosterior, PosteriorConfig
from core.errors import DependencyUnavailable
from features.ports import InMemoryFeatureStore
from features.rows import UserFeatureRow
from retrieval.catalog import ItemCatalog, ItemMeta
from retrieval.merge import CandidateRetriever, SourcePlan
from retrieval.sources import Candidate, RetrievalRequest
from serving.domain import RecommendationQuery
from serving.experiments import Experiments
from serving.exploration_slots import Explorer, InMemoryPosteriorReader
from serving.impressions import InMemoryImpressionLog
from serving.pipeline import PipelineConfig, RecommendationPipeline, RetrievalState
from serving.stage_observer import PIPELINE_STAGES

ITEMS = [f"i{n}" for n in range(12)]
CATALOG = ItemCatalog(ItemMeta(i, title=f"Movie {i}") for i in ITEMS)

# Written out here, not imported: a stage that stops reporting must fail this test.
EVERY_STAGE = {
    "features",
    "user_vector",
    "retrieval",
    "ranking",
    "rerank",
    "explore",
    "explanation",
    "impression",
}


class RecordingObserver:
    def __init__(self) -> None:
        self.stages: list[tuple[str, float, float]] = []
        self.requests: list[tuple[float, float]] = []
        self.lock = threading.Lock()
        self.late = threading.Event()

    def stage(self, name: str, wall_s: float, cpu_s: float) -> None:
        with self.lock:
            self.stages.append((name, wall_s, cpu_s))
        if name == "source_slow":
            self.late.set()

    def request(self, wall_s: float, cpu_s: float) -> None:
        self.requests.append((wall_s, cpu_s))

    def names(self) -> list[str]:
        return [name for name, _, _ in self.stages]


class ListSource:
    def __init__(self, name: str, items: list[str]) -> None:
        self.name, self.items = name, items

    def candidates(self, request: RetrievalRequest) -> list[Candidate]:
        kept = [i for i in self.items if i not in request.exclusions][: request.k]
        return [Candidate(i, 1.0 / (r + 1), self.name) for r, i in enumerate(kept)]


class BrokenSource(ListSource):
    def candidates(self, request: RetrievalRequest) -> list[Candidate]:
        raise DependencyUnavailable("milvus", "down")


class BlockedSource(ListSource):
    """Answers only once ``release`` is set: a source slower than the request's timeout."""

    def __init__(self) -> None:
        super().__init__("slow", ["i11"])
        self.release = threading.Event()

    def candidates(self, request: RetrievalRequest) -> list[Candidate]:
        self.release.wait(10)
        return super().candidates(request)


class Encoder:
    def encode_user(self, history: tuple[str, ...]) -> np.ndarray | None:
        return np.ones(4, dtype=np.float32) if history else None


class ScoreRanker:
    model_version = "score-v1"

    def score(self, history, candidates):
        return np.linspace(-1.0, 2.5, num=len(candidates))  # the last candidate scores 2.5

    def score_batch(self, histories, candidates):
        return [self.score(h, c) for h, c in zip(histories, candidates, strict=True)]


def make(sources, observer=None, experiments=None, executor=None):
    features = InMemoryFeatureStore()
    features.write_users([UserFeatureRow("u1", 1, recent_items=("i0",))])
    impressions = InMemoryImpressionLog()
    pipeline = RecommendationPipeline(
        features=features,
        retrieval=RetrievalState(
            CandidateRetriever(
                [SourcePlan(s) for s in sources],
                catalog=CATALOG,
                fallback=ListSource("popular", ITEMS[::-1]),
                executor=executor,
            ),
            CATALOG,
            as_of_ms=0,
        ),
        ranker=ScoreRanker(),
        impressions=impressions,
        config=PipelineConfig(candidates=6, exploration_slots=1),
        explorer=Explorer(InMemoryPosteriorReader({}, BetaPosterior(1, 1)), PosteriorConfig(), 4),
        experiments=experiments,
        user_encoder=Encoder(),
        observer=observer,
    )
    return pipeline, impressions


def ask(pipeline, k=4, context=None):
    return pipeline.recommend(RecommendationQuery(user_id="u1", k=k, context=context or {}))


def test_every_stage_and_every_source_reports_once_per_request():
    observer = RecordingObserver()
    pipeline, _ = make(
        [ListSource("ann", ITEMS[:3]), ListSource("cooccurrence", ITEMS[3:5])], observer
    )
    ask(pipeline)  # 4 candidates from the sources (i0 was seen) < 6: the fallback is asked

    names = observer.names()
    assert set(PIPELINE_STAGES) == EVERY_STAGE
    expected = EVERY_STAGE | {"source_ann", "source_cooccurrence", "source_fallback"}
    assert sorted(names) == sorted(expected)  # each exactly once
    assert len(observer.requests) == 1
    # The top-level stages run one after another inside the request: their wall times add up
    # to no more than the request's.
    top_level = sum(wall for name, wall, _ in observer.stages if name in EVERY_STAGE)
    assert all(wall >= 0 and cpu >= 0 for _, wall, cpu in observer.stages)
    assert top_level <= observer.requests[0][0]


def test_a_failing_source_still_reports_its_time():
    observer = RecordingObserver()
    pipeline, _ = make([ListSource("ann", ITEMS), BrokenSource("cooccurrence", [])], observer)
    slate = ask(pipeline)
    assert "source_failed:cooccurrence" in slate.fallback_reasons
    assert {"source_ann", "source_cooccurrence"} <= set(observer.names())


def test_a_source_past_the_timeout_reports_when_it_answers():
    observer, slow = RecordingObserver(), BlockedSource()
    with ThreadPoolExecutor(max_workers=2) as pool:
        pipeline, _ = make([ListSource("ann", ITEMS), slow], observer, executor=pool)
        slate = pipeline.recommend(RecommendationQuery(user_id="u1", k=4), deadline_s=0.0)
        assert "source_failed:slow" in slate.fallback_reasons
        assert "source_slow" not in observer.names()  # still running
        slow.release.set()
        assert observer.late.wait(10)  # told on the pool's thread once it answered


def test_an_interleaved_request_ranks_twice_and_reranks_once():
    experiments = Experiments.from_dict(
        {
            "experiments": [
                {
                    "name": "ranker",
                    "salt": "s",
                    "arms": [
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
    observer = RecordingObserver()
    pipeline, _ = make([ListSource("ann", ITEMS)], observer, experiments=experiments)
    slate = ask(pipeline)
    assert slate.model_version.startswith("interleaved(")
    names = observer.names()
    assert names.count("ranking") == 2 and names.count("rerank") == 1
    assert set(names) >= EVERY_STAGE


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_the_default_observer_exports_every_stage_and_what_was_served():
    pipeline, impressions = make([ListSource("ann", ITEMS[:3]), ListSource("fresh", ITEMS[3:5])])
    stages = [*EVERY_STAGE, "source_ann", "source_fresh", "source_fallback"]
    sources = ("ann", "fresh", "popular", "explore")

    def snapshot() -> dict[tuple[str, str], float]:
        values = {
            (name, source): sample(f"aether_recommend_{name}_total", source=source)
            for name in ("candidates", "slate_items")
            for source in sources
        }
        values |= {
            ("stage", s): sample("aether_recommend_stage_seconds_count", stage=s) for s in stages
        }
        for name in ("seconds_count", "top_score_count", "top_score_sum"):
            values[(name, "")] = sample(f"aether_recommend_{name}")
        return values

    before = snapshot()
    slate = ask(pipeline)
    after = snapshot()
    delta = {key: after[key] - before[key] for key in after}

    assert all(delta[("stage", s)] == 1 for s in stages), delta
    assert all(sample("aether_recommend_stage_cpu_seconds_total", stage=s) >= 0 for s in stages)
    assert delta[("seconds_count", "")] == 1
    # One ranked request: its top score (ScoreRanker's best is 2.5) is observed once.
    assert delta[("top_score_count", "")] == 1 and delta[("top_score_sum", "")] == 2.5
    # Candidates by the source that put them there (i0 was seen; the fallback fills up to 6).
    assert {s: delta[("candidates", s)] for s in sources} == {
        "ann": 2,
        "fresh": 2,
        "popular": 2,
        "explore": 0,
    }
    served = {s: float(sum(i.source == s for i in slate.items)) for s in sources}
    assert {s: delta[("slate_items", s)] for s in sources} == served
    assert served["explore"] == 1  # the exploration slot
    [impression] = impressions.published
    assert len(impression.items) == len(slate.items) == 4
    assert sample("aether_model_info", model_version="score-v1") == 1.0
