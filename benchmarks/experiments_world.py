"""The world ``aether bench experiments`` runs its experiments in: real users, their held-out
ratings, and the slates the real request pipeline serves them, computed once per arm.

* **Data** (real): a MovieLens dataset, rare items filtered, cut by the global temporal split of
  the evaluation protocol (``interactions.sequences.temporal_split``: ``T`` at the 90 % quantile
  of event time). Everything before ``T`` is the past the models know.
* **Models** (real): ``model`` is a trained ranker — the item-to-item transition baseline fitted on
  the past (``evaluation.baselines.ItemTransition``: P(next | last item)), or a SASRec checkpoint
  fitted on the same split (``aether train --split temporal``, or trained here under a time
  budget). ``popularity`` is the pipeline's ``ranker: popularity`` arm: retrieval order, no model.
* **Pipeline** (real): ``serving.pipeline.RecommendationPipeline`` in process, with the experiment
  arms of ``serving.experiments`` (``ranker: sasrec`` for the model, ``ranker: popularity``, and
  ``interleave: [sasrec, popularity]`` — team draft, ``serving.interleaving``), candidates from one
  source, the past's most popular items (so "popularity" is exactly that, and the model re-ranks
  the same 200 candidates), seen and dismissed items excluded as in production, impressions
  logged. The ranker named ``sasrec`` in the arms is whichever model was chosen.
* **Requests** (real times and histories): every user who rated something after ``T`` asks for
  ``k`` items at up to ``requests_per_user`` moments, spread over their own held-out ratings; each
  request sees the user's ratings before that moment (point in time), with ratings <= 2 as
  dismissals (left out of the sequence, as the worker does).
* **What a user would click** (real tastes): an item in the slate the user rated >= 4 at or after
  the request; what they would dismiss: one they rated <= 2 then. Whether they look at a position
  is simulated per run (``benchmarks.experiments``).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evaluation.baselines import EASE, CatalogueIndex, ItemTransition
from events.models import Impression
from features.ports import InMemoryFeatureStore
from features.rows import UserFeatureRow
from interactions.movielens import load_movielens
from interactions.replay import CLICK_MIN_RATING, DISMISS_MAX_RATING
from interactions.sequences import (
    Split,
    filter_rare_items,
    quantile_cutoff,
    temporal_split,
    user_sequences,
)
from ranker.fit import load_or_fit
from ranker.scoring import UNKNOWN_ITEM_SCORE, SASRecRanker
from ranker.train import TrainConfig
from retrieval.catalog import ItemCatalog, ItemMeta
from retrieval.merge import CandidateRetriever, SourcePlan
from retrieval.popular import PopularSource
from serving.domain import RecommendationQuery
from serving.experiments import Experiments
from serving.impressions import InMemoryImpressionLog
from serving.pipeline import PipelineConfig, RecommendationPipeline, RetrievalState

log = logging.getLogger(__name__)

EXPERIMENT = "bench"
ARMS = ("model", "popularity", "interleaved")
ARM_PARAMS = {
    "model": {"ranker": "sasrec"},
    "popularity": {"ranker": "popularity"},
    "interleaved": {"interleave": ["sasrec", "popularity"]},
}
MODELS = ("ease", "transition", "sasrec")


@dataclass(frozen=True)
class WorldConfig:
    dataset: str = "ml-1m"
    data: Path | None = None
    model: str = "ease"
    ease_l2: float = 500.0
    checkpoint: Path | None = None  # sasrec: fitted on the temporal split (else trained here)
    train_minutes: float = 5.0
    requests_per_user: int = 4
    k: int = 10
    candidates: int = 200
    max_users: int | None = None  # a seeded sample of the held-out users (tests)
    work_dir: Path = Path("artifacts")
    seed: int = 0


@dataclass(frozen=True)
class ArmSlates:
    """One arm's slates for every request, grouped by user (``start``/``count`` rows each)."""

    liked: np.ndarray  # (S, k) bool: the user rated that slot's item >= 4 at/after the request
    disliked: np.ndarray  # (S, k) bool: ... rated it <= 2
    shown: np.ndarray  # (S, k) bool: the slot exists (a slate can be shorter than k)
    teams: np.ndarray  # (S, k) int8: 1 = team A (the model), 2 = team B, 0 = no team
    start: np.ndarray  # (U,)
    count: np.ndarray  # (U,)
    impressions: list[Impression]  # as the pipeline logged them, row order


@dataclass
class ExperimentWorld:
    users: list[str]
    arms: dict[str, ArmSlates]
    model_version: str
    facts: dict[str, Any] = field(default_factory=dict)


class BaselineRanker:
    """A full-catalogue baseline (``evaluation.baselines``) behind the pipeline's ``Ranker``."""

    def __init__(self, model: Any, catalogue: CatalogueIndex, model_version: str) -> None:
        self._model = model
        self._catalogue = catalogue
        self.model_version = model_version
        self._last: tuple[tuple[str, ...], np.ndarray] | None = None

    def score(self, history: Sequence[str], candidates: Sequence[str]) -> np.ndarray:
        # the model arm and the interleaved arm ask about the same history one after the other
        key = tuple(history)
        if self._last is None or self._last[0] != key:
            self._last = (key, self._model.score_all([history])[0])
        row = self._last[1]
        cols = [self._catalogue.column(c) for c in candidates]
        return np.array([row[c] if c >= 0 else UNKNOWN_ITEM_SCORE for c in cols], dtype=np.float32)

    def score_batch(
        self, histories: Sequence[Sequence[str]], candidates: Sequence[Sequence[str]]
    ) -> list[np.ndarray]:
        return [self.score(h, c) for h, c in zip(histories, candidates, strict=True)]


def _ranker(config: WorldConfig, ratings: pd.DataFrame, split: Any) -> Any:
    past = user_sequences(ratings[ratings["timestamp_ms"] < split.cutoff_ms])
    catalogue = CatalogueIndex(split.items)
    if config.model == "ease":
        model = EASE(catalogue, past, l2=config.ease_l2)
        return BaselineRanker(model, catalogue, f"ease-l2-{config.ease_l2:g}-{len(past)}u")
    if config.model == "transition":
        model = ItemTransition(catalogue, past)
        return BaselineRanker(model, catalogue, f"item-transition-{len(past)}u")
    if config.model == "sasrec":
        fit_into = config.work_dir / f"bench-experiments-sasrec-{config.dataset}.pt"
        train = TrainConfig(max_minutes=config.train_minutes, progress=False, seed=config.seed)
        checkpoint, _ = load_or_fit(
            split, config.dataset, config.checkpoint, fit_into, train_config=train
        )
        return SASRecRanker(checkpoint)
    raise ValueError(f"unknown model {config.model!r}; choose one of {MODELS}")


@dataclass(frozen=True)
class _Request:
    user: str
    at_ms: int
    recent: tuple[str, ...]
    dismissed: tuple[str, ...]
    liked: frozenset[str]
    disliked: frozenset[str]


def _requests(
    ratings: pd.DataFrame, cutoff_ms: int, users: Sequence[str], per_user: int
) -> dict[str, list[_Request]]:
    """Up to ``per_user`` requests per user, at the times of their own held-out ratings."""
    out: dict[str, list[_Request]] = {}
    ordered = ratings.sort_values(["user_id", "timestamp_ms", "item_id"], kind="stable")
    wanted = set(users)
    for user, group in ordered.groupby("user_id", sort=True):
        if user not in wanted:
            continue
        times = group["timestamp_ms"].to_numpy()
        items = group["item_id"].astype(str).to_numpy()
        values = group["rating"].to_numpy()
        first_future = int(np.searchsorted(times, cutoff_ms, side="left"))
        future = np.arange(first_future, len(times))
        picks = np.unique(np.linspace(0, len(future) - 1, per_user).round().astype(int))
        requests = []
        for position in future[picks]:
            at = int(times[position])
            before = np.searchsorted(times, at, side="left")  # strictly before: point in time
            low = values[:before] <= DISMISS_MAX_RATING
            after_items, after_values = items[before:], values[before:]
            requests.append(
                _Request(
                    user=str(user),
                    at_ms=at,
                    recent=tuple(items[:before][~low][-200:]),
                    dismissed=tuple(items[:before][low]),
                    liked=frozenset(after_items[after_values >= CLICK_MIN_RATING]),
                    disliked=frozenset(after_items[after_values <= DISMISS_MAX_RATING]),
                )
            )
        out[str(user)] = requests
    return out


def build_world(config: WorldConfig) -> ExperimentWorld:
    data = load_movielens(config.dataset, config.data)
    ratings = filter_rare_items(data.ratings)
    # The SASRec checkpoint is checked against (or fitted on) the protocol's whole temporal split;
    # the baselines need only its cut-off and catalogue, far cheaper than its requests.
    split = (
        temporal_split(ratings)
        if config.model == "sasrec"
        else Split(
            "temporal",
            {},
            [],
            [],
            tuple(sorted(ratings["item_id"].unique())),
            cutoff_ms=quantile_cutoff(ratings["timestamp_ms"], 0.9),
        )
    )
    cutoff = int(split.cutoff_ms)  # type: ignore[arg-type]
    past = ratings[ratings["timestamp_ms"] < cutoff]
    users = sorted(ratings.loc[ratings["timestamp_ms"] >= cutoff, "user_id"].astype(str).unique())
    if config.max_users is not None and len(users) > config.max_users:
        rng = np.random.default_rng(config.seed)
        users = sorted(rng.choice(users, size=config.max_users, replace=False).tolist())
    ranker = _ranker(config, ratings, split)
    titles = dict(zip(data.items["item_id"], data.items["title"], strict=True))
    catalog = ItemCatalog(ItemMeta(item, title=titles.get(item, item)) for item in split.items)
    popular = PopularSource(dict(Counter(past["item_id"].astype(str))), catalog)
    features = InMemoryFeatureStore()
    clock = {"now": cutoff}
    experiments = Experiments.from_dict(
        {
            "experiments": [
                {
                    "name": EXPERIMENT,
                    "salt": "bench",
                    "arms": [{"name": arm, "weight": 1, "params": ARM_PARAMS[arm]} for arm in ARMS],
                }
            ]
        }
    )
    logged = InMemoryImpressionLog()
    pipeline = RecommendationPipeline(
        features=features,
        retrieval=RetrievalState(
            retriever=CandidateRetriever([SourcePlan(popular)], catalog=catalog, fallback=popular),
            catalog=catalog,
            as_of_ms=cutoff,
        ),
        ranker=ranker,
        impressions=logged,
        config=PipelineConfig(candidates=config.candidates, deadline_s=30.0),
        experiments=experiments,
        clock_ms=lambda: clock["now"],
    )
    requests = _requests(ratings, cutoff, users, config.requests_per_user)
    rows: dict[str, list[tuple[Any, ...]]] = {arm: [] for arm in ARMS}
    for user in users:
        for request in requests[user]:
            features.write_users(
                [UserFeatureRow(user, request.at_ms, request.recent, request.dismissed)]
            )
            clock["now"] = request.at_ms
            for arm in ARMS:
                context = {f"experiment.{EXPERIMENT}": arm}
                slate = pipeline.recommend(RecommendationQuery(user, config.k, context=context))
                rows[arm].append((request, slate, logged.published[-1]))
    arms = {arm: _arm_slates(rows[arm], users, config.k) for arm in ARMS}
    facts = {
        "dataset": config.dataset,
        "model": config.model,
        "model_version": ranker.model_version,
        "cutoff_ms": cutoff,
        "population_users": len(users),
        "requests": len(rows["model"]),
        "requests_per_user_max": config.requests_per_user,
        "k": config.k,
        "candidates": config.candidates,
    }
    log.info("experiment world: %s", facts)
    return ExperimentWorld(users, arms, ranker.model_version, facts)


def _arm_slates(rows: list[tuple[Any, ...]], users: Sequence[str], k: int) -> ArmSlates:
    n = len(rows)
    liked = np.zeros((n, k), dtype=bool)
    disliked = np.zeros((n, k), dtype=bool)
    shown = np.zeros((n, k), dtype=bool)
    teams = np.zeros((n, k), dtype=np.int8)
    for r, (request, slate, _) in enumerate(rows):
        for p, item in enumerate(slate.items[:k]):
            shown[r, p] = True
            liked[r, p] = item.item_id in request.liked
            disliked[r, p] = item.item_id in request.disliked
            teams[r, p] = {"A": 1, "B": 2}.get(item.team, 0)
    owners = [request.user for request, _, _ in rows]
    index = {u: i for i, u in enumerate(users)}
    owner_index = np.array([index[u] for u in owners], dtype=np.int64)
    count = np.bincount(owner_index, minlength=len(users))
    start = np.concatenate([[0], np.cumsum(count)[:-1]])
    return ArmSlates(
        liked, disliked, shown, teams, start, count, [impression for _, _, impression in rows]
    )


def examination(k: int) -> np.ndarray:
    """Position-based click model: position ``p`` (0-based) is looked at w.p. ``1/log2(p+2)``."""
    return 1.0 / np.log2(np.arange(k) + 2.0)


@dataclass(frozen=True)
class Served:
    """What one run's users got: per slate row, its user (arrival index), clicks and slots."""

    owner: np.ndarray  # (R,) index of the run's user that saw the row
    rows: np.ndarray  # (R,) row of the arm's slates
    clicked: np.ndarray  # (R, k) bool
    examined: np.ndarray  # (R, k) bool


def serve(slates: ArmSlates, users: np.ndarray, rng: np.random.Generator, k: int) -> Served:
    """Every slate of each drawn user, with simulated examination and the clicks it gives."""
    counts = slates.count[users]
    owner = np.repeat(np.arange(len(users)), counts)
    first_of_owner = np.repeat(np.cumsum(counts) - counts, counts)
    rows = np.repeat(slates.start[users], counts) + (np.arange(counts.sum()) - first_of_owner)
    examined = (rng.random((len(rows), k)) < examination(k)) & slates.shown[rows]
    return Served(owner, rows, examined & slates.liked[rows], examined)
