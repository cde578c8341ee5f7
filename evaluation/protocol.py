"""Rank the whole catalogue for each request, filter seen items, and summarise the metrics.

A *scorer* is anything with ``score_all(histories) -> (N, C)`` over the catalogue's columns
(the baselines, or :class:`SASRecCatalogueScorer`). Every method is evaluated by the same code on
the same requests, so the numbers are comparable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from tqdm import tqdm

from evaluation import metrics
from evaluation.baselines import CatalogueIndex
from interactions.sequences import EvalCase
from ranker.data import ItemVocabulary
from ranker.ensemble import RankingModel
from ranker.scoring import UNKNOWN_ITEM_SCORE
from ranker.train import score_all_items

TOP_K = 10


class CatalogueScorer(Protocol):
    def score_all(self, histories: Sequence[Sequence[str]]) -> np.ndarray: ...


class SASRecCatalogueScorer:
    """SASRec logits laid out on the catalogue's columns.

    Catalogue items the model never saw get ``UNKNOWN_ITEM_SCORE``. A history with no item the
    model knows (a brand-new user) is scored by ``fallback`` (recent popularity), as serving does.
    """

    name = "sasrec"

    def __init__(
        self,
        model: RankingModel,
        vocab: ItemVocabulary,
        catalogue: CatalogueIndex,
        fallback: CatalogueScorer,
    ) -> None:
        self._model, self._vocab, self._fallback = model, vocab, fallback
        self._columns = np.array([catalogue.column(i) for i in vocab.item_ids], dtype=np.int64)
        self._n = len(catalogue)

    def score_all(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        logits = score_all_items(self._model, self._vocab, histories)
        out = np.full((len(histories), self._n), UNKNOWN_ITEM_SCORE, dtype=np.float32)
        keep = self._columns >= 0
        out[:, self._columns[keep]] = logits[:, keep]
        cold = [r for r, h in enumerate(histories) if not any(i in self._vocab for i in h)]
        if cold:
            out[cold] = self._fallback.score_all([histories[r] for r in cold])
        return out


class MemoScorer:
    """Remembers each history's score row, so several variants (or the validation grid of a
    blend weight) reuse one forward pass per request."""

    def __init__(self, inner: CatalogueScorer) -> None:
        self._inner = inner
        self._rows: dict[tuple[str, ...], np.ndarray] = {}

    def score_all(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        keys = [tuple(h) for h in histories]
        missing = list(dict.fromkeys(k for k in keys if k not in self._rows))
        if missing:
            for key, row in zip(missing, self._inner.score_all(missing), strict=True):
                self._rows[key] = row
        return np.stack([self._rows[k] for k in keys])


class PopularityPriorBlend:
    """``log p_model(item | history) + beta * log(1 + recent count)``.

    SASRec knows the order of a user's items but not what is popular *now*; on a global time
    split recency matters, so a log-linear prior from the recent window is added. ``beta`` is
    chosen on validation (``beta = 0`` is plain SASRec). Unknown items keep their low score.
    """

    name = "sasrec+pop"

    def __init__(self, model: CatalogueScorer, recent_counts: np.ndarray, beta: float) -> None:
        self._model, self.beta = model, beta
        self._prior = beta * np.log1p(np.asarray(recent_counts, dtype=np.float64))

    def score_all(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        scores = np.asarray(self._model.score_all(histories), dtype=np.float64)
        known = scores > UNKNOWN_ITEM_SCORE / 2
        masked = np.where(known, scores, -np.inf)
        top = masked.max(axis=1, keepdims=True)
        log_norm = top + np.log(np.exp(masked - top).sum(axis=1, keepdims=True))
        return np.where(known, masked - log_norm + self._prior, UNKNOWN_ITEM_SCORE)


@dataclass(frozen=True)
class Ranked:
    """Per-request outcome: the target's rank and the top-10 list (catalogue columns)."""

    ranks: np.ndarray  # (N,)
    top: np.ndarray  # (N, TOP_K)


def rank_requests(
    scorer: CatalogueScorer,
    cases: Sequence[EvalCase],
    catalogue: CatalogueIndex,
    chunk: int = 512,
    desc: str | None = None,
) -> Ranked:
    """Score all items per request, drop the history's items, rank the target, keep top-k."""
    ranks, tops = [], []
    starts = range(0, len(cases), chunk)
    for start in tqdm(starts, desc=desc, disable=desc is None, leave=False):
        batch = cases[start : start + chunk]
        scores = np.asarray(scorer.score_all([c.history for c in batch]), dtype=np.float64)
        for row, case in enumerate(batch):
            scores[row, catalogue.columns(list(case.history))] = -np.inf  # seen items filtered
        targets = np.array([catalogue.column(c.target) for c in batch], dtype=np.int64)
        ranks.append(metrics.target_ranks(scores, targets))
        tops.append(metrics.top_k(scores, TOP_K))
    if not ranks:
        return Ranked(np.zeros(0, dtype=np.int64), np.zeros((0, TOP_K), dtype=np.int64))
    return Ranked(np.concatenate(ranks), np.concatenate(tops))


@dataclass(frozen=True)
class CatalogueFacts:
    """What beyond-accuracy metrics need: training popularity and item categories."""

    popularity: np.ndarray  # (C,) training interactions per item
    categories: Sequence[frozenset[str]]  # (C,) category set per item
    n_users: int


def summarise(ranked: Ranked, facts: CatalogueFacts) -> dict[str, float]:
    """Accuracy and beyond-accuracy figures of one method on one request set."""
    n_items = len(facts.popularity)
    top = ranked.top
    return {
        "ndcg10": metrics.ndcg_at_k(ranked.ranks, TOP_K),
        "hr10": metrics.hit_rate_at_k(ranked.ranks, TOP_K),
        "mrr": metrics.mean_reciprocal_rank(ranked.ranks),
        "coverage": metrics.catalogue_coverage(top, n_items) if top.size else float("nan"),
        "top1pct_share": metrics.popular_slot_share(
            top, metrics.top_popular_columns(facts.popularity, 0.01)
        ),
        "exposure_gini": metrics.gini(metrics.exposure_counts(top, n_items))
        if top.size
        else float("nan"),
        "ild": metrics.intra_list_diversity(top, facts.categories),
        "novelty": metrics.novelty(top, facts.popularity, facts.n_users),
        "requests": float(len(ranked.ranks)),
    }


def subset(ranked: Ranked, mask: np.ndarray) -> Ranked:
    return Ranked(ranked.ranks[mask], ranked.top[mask])
