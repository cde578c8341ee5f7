"""Both evaluation protocols end to end: splits, ranker, baselines, figures.

* leave-one-out: baselines fitted on the training sequences; EASE's λ chosen on the validation
  item; the ranker selected (early stopping) on the validation item; figures on the test item.
* temporal: every method is chosen on the warm validation requests (fitted before ``T_val``,
  asked about events in ``[T_val, T)``; warm = the same >= 5 events of history as the reported
  test figures), then the baselines are re-fitted on everything before ``T`` and asked about
  the events after ``T`` (every event with its point-in-time history, or each user's first,
  as the split says). The ranker is NOT re-trained on ``[T_val, T)`` (it sees those events
  only as input history), which favours the baselines, never the ranker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from evaluation.baselines import (
    EASE,
    CatalogueIndex,
    ItemTransition,
    RecentPopular,
    popularity_counts,
)
from evaluation.metrics import ndcg_at_k, relative_gain_ci
from evaluation.protocol import (
    CatalogueFacts,
    CatalogueScorer,
    MemoScorer,
    PopularityPriorBlend,
    Ranked,
    SASRecCatalogueScorer,
    rank_requests,
    subset,
    summarise,
)
from interactions.sequences import EvalCase, Split, events_before, user_sequences
from ranker.data import ItemVocabulary
from ranker.ensemble import RankingModel

log = logging.getLogger(__name__)

EASE_L2_GRID = (10.0, 50.0, 200.0, 500.0, 1000.0, 3000.0)
POPULAR_WINDOW_DAYS_GRID: tuple[float | None, ...] = (1.0, 7.0, 30.0, 90.0, None)
COLD_START_HISTORY = 5  # users with fewer training events than this are "cold" (reported apart)
BASELINES = ("popular", "transition", "ease")
MODELS = ("sasrec", "sasrec_pop")


@dataclass
class ProtocolResult:
    name: str
    figures: dict[str, dict[str, float]] = field(default_factory=dict)  # method -> metrics
    cold: dict[str, dict[str, float]] = field(default_factory=dict)  # method -> cold-user metrics
    chosen: dict[str, Any] = field(default_factory=dict)  # hyper-parameters chosen on validation
    validation_ndcg10: dict[str, float] = field(default_factory=dict)
    ranks: dict[str, np.ndarray] = field(default_factory=dict)  # method -> reported test ranks
    users: list[str] = field(default_factory=list)  # the user of each reported test request
    # model -> {"baseline", "gain", "ci95_low", "ci95_high"}: NDCG@10 against the best baseline
    against_best_baseline: dict[str, dict[str, Any]] = field(default_factory=dict)

    def compare_with_best_baseline(self) -> None:
        """Each model's NDCG@10 gain over the best baseline on the test, with a paired 95 % CI.

        The interval says how much of a gain the number of test requests can resolve: a gain
        whose interval includes 0 is not distinguishable from the baseline on this split. Users
        are resampled (all their requests together), so several requests per user do not
        narrow it falsely.
        """
        best = max(BASELINES, key=lambda m: self.figures[m]["ndcg10"])
        for model in MODELS:
            gain, low, high = relative_gain_ci(
                self.ranks[model], self.ranks[best], groups=self.users or None
            )
            self.against_best_baseline[model] = {
                "baseline": best,
                "gain": gain,
                "ci95_low": low,
                "ci95_high": high,
            }


def catalogue_facts(
    catalogue: CatalogueIndex, train: Mapping[str, Sequence[str]], items: pd.DataFrame
) -> CatalogueFacts:
    categories = dict(zip(items["item_id"].astype(str), items["categories"], strict=True))
    return CatalogueFacts(
        popularity=popularity_counts(train, catalogue),
        categories=[frozenset(categories.get(i, ())) for i in catalogue.items],
        n_users=len(train),
    )


def _validate(
    scorer: CatalogueScorer, cases: Sequence[EvalCase], catalogue: CatalogueIndex
) -> float:
    return summarise_ndcg(rank_requests(scorer, cases, catalogue))


def summarise_ndcg(ranked: Ranked) -> float:
    return ndcg_at_k(ranked.ranks, 10)


def choose_on_validation(
    build: Callable[[Any], CatalogueScorer],
    grid: Sequence[Any],
    cases: Sequence[EvalCase],
    catalogue: CatalogueIndex,
) -> tuple[Any, float]:
    """The grid value whose scorer has the best validation NDCG@10 (first wins ties)."""
    best_value, best = grid[0], -1.0
    for value in grid:
        ndcg = _validate(build(value), cases, catalogue)
        log.info("validation %s -> NDCG@10 %.4f", value, ndcg)
        if ndcg > best:
            best_value, best = value, ndcg
    return best_value, best


BLEND_BETA_GRID = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def _with_blend(
    result: ProtocolResult,
    model_scorer: CatalogueScorer,
    val_model_scorer: CatalogueScorer,
    prior: RecentPopular,
    val_prior: RecentPopular,
    validation: Sequence[EvalCase],
    catalogue: CatalogueIndex,
) -> PopularityPriorBlend:
    """Choose the popularity-prior weight on validation; return the blend for the test."""
    beta, val = choose_on_validation(
        lambda b: PopularityPriorBlend(val_model_scorer, val_prior.recent_counts, b),
        BLEND_BETA_GRID,
        validation,
        catalogue,
    )
    result.chosen["sasrec_pop_beta"] = beta
    result.validation_ndcg10["sasrec_pop"] = val
    return PopularityPriorBlend(model_scorer, prior.recent_counts, beta)


def evaluate_leave_one_out(
    split: Split,
    items: pd.DataFrame,
    model: RankingModel,
    vocab: ItemVocabulary,
    progress: bool = True,
) -> ProtocolResult:
    catalogue = CatalogueIndex(split.items)
    facts = catalogue_facts(catalogue, split.train, items)
    result = ProtocolResult("leave-one-out")
    popular = RecentPopular.from_sequences(catalogue, split.train)
    l2, val = choose_on_validation(
        lambda v: EASE(catalogue, split.train, v), EASE_L2_GRID, split.validation, catalogue
    )
    result.chosen["ease_l2"] = l2
    result.validation_ndcg10["ease"] = val
    sasrec = MemoScorer(SASRecCatalogueScorer(model, vocab, catalogue, popular))
    methods: dict[str, CatalogueScorer] = {
        "sasrec": sasrec,
        "sasrec_pop": _with_blend(
            result, sasrec, sasrec, popular, popular, split.validation, catalogue
        ),
        "popular": popular,
        "transition": ItemTransition(catalogue, split.train),
        "ease": EASE(catalogue, split.train, l2),
    }
    for name, scorer in methods.items():
        if name not in result.validation_ndcg10:
            result.validation_ndcg10[name] = _validate(scorer, split.validation, catalogue)
        ranked = rank_requests(
            scorer, split.test, catalogue, desc=f"loo {name}" if progress else None
        )
        result.figures[name] = summarise(ranked, facts)
        result.ranks[name] = ranked.ranks
        log.info("leave-one-out %s: %s", name, result.figures[name])
    result.users = [c.user_id for c in split.test]
    result.compare_with_best_baseline()
    return result


def evaluate_temporal(
    split: Split,
    ratings: pd.DataFrame,
    items: pd.DataFrame,
    model: RankingModel,
    vocab: ItemVocabulary,
    test_model: tuple[RankingModel, ItemVocabulary] | None = None,
    progress: bool = True,
) -> ProtocolResult:
    """``model`` (fitted before ``T_val``) makes the validation choices; the test is ranked by
    ``test_model`` (the same recipe re-fitted on every event before ``T``) when given, else by
    ``model`` itself."""
    assert split.cutoff_ms is not None and split.validation_cutoff_ms is not None
    catalogue = CatalogueIndex(split.items)
    before_val = events_before(ratings, split.validation_cutoff_ms)
    before_test = events_before(ratings, split.cutoff_ms)
    test_train = user_sequences(before_test)  # what baselines are re-fitted on for the test
    facts = catalogue_facts(catalogue, test_train, items)
    result = ProtocolResult("temporal")
    t_val, t = split.validation_cutoff_ms, split.cutoff_ms
    # Choices are made on the validation users who are warm by the same rule as the reported
    # test figures (>= COLD_START_HISTORY events before the cut-off); cold users are apart.
    validation = [c for c in split.validation if len(c.history) >= COLD_START_HISTORY]
    validation = validation or list(split.validation)

    window, val = choose_on_validation(
        lambda w: RecentPopular.from_events(catalogue, before_val, t_val, w),
        POPULAR_WINDOW_DAYS_GRID,
        validation,
        catalogue,
    )
    result.chosen["popular_window_days"] = window
    result.validation_ndcg10["popular"] = val
    l2, val = choose_on_validation(
        lambda v: EASE(catalogue, split.train, v), EASE_L2_GRID, validation, catalogue
    )
    result.chosen["ease_l2"] = l2
    result.validation_ndcg10["ease"] = val
    result.validation_ndcg10["transition"] = _validate(
        ItemTransition(catalogue, split.train), validation, catalogue
    )
    val_popular = RecentPopular.from_events(catalogue, before_val, t_val, window)
    val_sasrec = MemoScorer(SASRecCatalogueScorer(model, vocab, catalogue, val_popular))
    result.validation_ndcg10["sasrec"] = _validate(val_sasrec, validation, catalogue)

    popular = RecentPopular.from_events(catalogue, before_test, t, window)
    test_sasrec, test_vocab = test_model or (model, vocab)
    sasrec = MemoScorer(SASRecCatalogueScorer(test_sasrec, test_vocab, catalogue, popular))
    methods: dict[str, CatalogueScorer] = {
        "sasrec": sasrec,
        "sasrec_pop": _with_blend(
            result, sasrec, val_sasrec, popular, val_popular, validation, catalogue
        ),
        "popular": popular,
        "transition": ItemTransition(catalogue, test_train),
        "ease": EASE(catalogue, test_train, l2),
    }
    cold = np.array([len(c.history) < COLD_START_HISTORY for c in split.test], dtype=bool)
    for name, scorer in methods.items():
        ranked = rank_requests(
            scorer, split.test, catalogue, desc=f"temporal {name}" if progress else None
        )
        result.figures[name] = summarise(subset(ranked, ~cold), facts)
        result.ranks[name] = ranked.ranks[~cold]
        result.cold[name] = summarise(subset(ranked, cold), facts)
        result.figures[name]["all_users_ndcg10"] = summarise(ranked, facts)["ndcg10"]
        log.info("temporal %s: %s", name, result.figures[name])
    result.users = [c.user_id for c, is_cold in zip(split.test, cold, strict=True) if not is_cold]
    result.compare_with_best_baseline()
    return result
