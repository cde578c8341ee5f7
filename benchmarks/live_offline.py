"""The offline side of ``aether bench live``: the same model on the same requests, ranked as the
offline temporal protocol ranks them (``evaluation.protocol``: the whole catalogue, the
point-in-time history's items filtered), and a walk from that figure to the served one.

Each step changes one thing, so a loss between two steps has one cause:

1. ``offline_temporal`` — full point-in-time history (every rating before the request), whole
   catalogue, seen items filtered: what ``aether eval``'s temporal protocol computes;
2. ``offline_served_features`` — the history the live server's model read (the user's online
   row, ``serving.pipeline.model_history``: at most ``sequence_length`` items, dismissed ones
   kept or not as the model was trained) and its exclusions (recent and dismissed items), whole
   catalogue: the cost of the **features**;
3. ``offline_served_exclusions`` — the same scores with the user's seen set excluded as well
   (every item rated before the request: what ``serving.seen_items`` drops beyond the row's
   recent items): the effect of the **exclusions**;
4. ``offline_served_candidates`` — those scores, ranked among the candidates the live server
   retrieved (its answer to ``k = candidates``, the recall probe, already without seen items)
   only: the cost of **retrieval recall**;
5. ``live`` — the served slate: what re-ranking and serving add or lose on top.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmarks.live_figures import K, user_mean_ci
from benchmarks.live_replay import Served
from evaluation import metrics
from evaluation.baselines import CatalogueIndex, RecentPopular
from evaluation.protocol import SASRecCatalogueScorer, rank_requests
from features.rows import UserFeatureRow
from interactions.sequences import EvalCase
from ranker.checkpoint import Checkpoint
from serving.pipeline import model_history


def offline_figures(
    served: Sequence[Served],
    checkpoint: Checkpoint,
    catalogue: CatalogueIndex,
    fallback: RecentPopular,
    live_ranks: np.ndarray,
    *,
    chunk: int = 256,
    seed: int = 0,
) -> tuple[dict[str, Any], np.ndarray]:
    """The four steps' NDCG@10 on ``served``'s requests (the first with a user-resampled CI),
    retrieval recall, and the offline figure's ranks."""
    scorer = SASRecCatalogueScorer(checkpoint.model, checkpoint.vocab, catalogue, fallback)
    users = [s.request.user_id for s in served]
    cases = [EvalCase(s.request.user_id, s.request.history, s.request.item_id) for s in served]
    offline = rank_requests(scorer, cases, catalogue, chunk=chunk).ranks
    low, high = user_mean_ci(metrics.ndcg_gains(offline, K), users, seed=seed)
    figures: dict[str, Any] = {
        "offline_temporal_ndcg10_same_users": metrics.ndcg_at_k(offline, K),
        "offline_temporal_hr10_same_users": metrics.hit_rate_at_k(offline, K),
        "offline_temporal_ndcg10_same_users_ci95_low": low,
        "offline_temporal_ndcg10_same_users_ci95_high": high,
    }
    if served:
        gain, low, high = metrics.relative_gain_ci(live_ranks, offline, K, groups=users, seed=seed)
        figures["live_gain_over_offline"] = gain
        figures["live_gain_over_offline_ci95_low"] = low
        figures["live_gain_over_offline_ci95_high"] = high

    model_histories = [served_model_history(s, checkpoint) for s in served]
    features_ranks, exclusions_ranks, candidate_ranks, recalled = [], [], [], []
    targets = np.asarray([catalogue.column(s.request.item_id) for s in served], dtype=np.int64)
    excluded_targets = 0
    for start in range(0, len(served), chunk):
        batch = served[start : start + chunk]
        scores = np.asarray(
            scorer.score_all(model_histories[start : start + chunk]), dtype=np.float64
        )  # (B, C)
        for row, s in enumerate(batch):
            excluded = catalogue.columns(list(s.live_history) + list(s.live_dismissed))
            excluded_targets += s.request.item_id in set(s.live_history) | set(s.live_dismissed)
            scores[row, excluded] = -np.inf
        batch_targets = targets[start : start + chunk]
        features_ranks.append(metrics.target_ranks(scores, batch_targets))
        for row, s in enumerate(batch):  # the seen set: every item rated before the request
            scores[row, catalogue.columns(list(s.request.history))] = -np.inf
        exclusions_ranks.append(metrics.target_ranks(scores, batch_targets))
        for row, s in enumerate(batch):
            if s.candidates is None:
                continue
            hit = s.request.item_id in s.candidates
            recalled.append(hit)
            keep = catalogue.columns(list(s.candidates))
            only = np.full(scores.shape[1], -np.inf)
            only[keep] = scores[row, keep]
            candidate_ranks.append(
                int(metrics.target_ranks(only[None, :], batch_targets[row : row + 1])[0])
                if hit
                else scores.shape[1] + 1
            )
    features = np.concatenate(features_ranks) if features_ranks else np.zeros(0, np.int64)
    figures["offline_served_features_ndcg10"] = metrics.ndcg_at_k(features, K)
    figures["offline_served_exclusions_ndcg10"] = metrics.ndcg_at_k(
        np.concatenate(exclusions_ranks) if exclusions_ranks else np.zeros(0, np.int64), K
    )
    figures["served_history_excludes_target"] = int(excluded_targets)
    if recalled:
        figures["live_candidate_recall"] = float(np.mean(recalled))
        figures["offline_served_candidates_ndcg10"] = metrics.ndcg_at_k(
            np.asarray(candidate_ranks), K
        )
        figures["recall_probe_requests"] = len(recalled)
    figures["history_truncated_share"] = (
        float(
            np.mean(
                [
                    len(s.request.history) > len(model_history)
                    for s, model_history in zip(served, model_histories, strict=True)
                ]
            )
        )
        if served
        else float("nan")
    )
    return figures, offline


def served_model_history(served: Served, checkpoint: Checkpoint) -> tuple[str, ...]:
    """The history the live server's model read for ``served`` (``model_history`` of the row)."""
    row = UserFeatureRow(
        served.request.user_id,
        0,
        recent_items=served.live_history,
        dismissed_items=served.live_dismissed,
        recent_interactions=served.live_interactions,
    )
    return model_history(checkpoint, row)


def diagnosis(figures: dict[str, Any]) -> list[str]:
    """Plain sentences: where the served figure loses against the offline one, step by step."""
    steps = [
        ("offline_temporal_ndcg10_same_users", "offline, full history, whole catalogue"),
        ("offline_served_features_ndcg10", "offline, the served features (online row)"),
        ("offline_served_exclusions_ndcg10", "the same, the seen set excluded too"),
        ("offline_served_candidates_ndcg10", "the same, among the retrieved candidates only"),
        ("live_ndcg10", "served live slate"),
    ]
    lines, previous = [], None
    for key, what in steps:
        if key not in figures:
            continue
        value = figures[key]
        change = "" if previous is None else f" ({value - previous:+.4f})"
        lines.append(f"{what:<48} NDCG@10 {value:.4f}{change}")
        previous = value
    if "live_candidate_recall" in figures:
        lines.append(
            f"targets among the live server's {figures.get('candidates', '?')} candidates: "
            f"{figures['live_candidate_recall']:.3f}"
        )
    return lines
