"""Off-policy estimates of a candidate policy's CTR from the system's own impression log. Pure.

What ``aether ope --from-log`` computes. Each logged slot is one round (``bandits.
impression_ope``): the item served there, the propensity serving logged for it and its reward,
attributed by the system's own rule in event time (``bandits.attribution``: a click with
``request_id`` → its slate, inside the attribution window). The estimators are the ones checked
on the Open Bandit samples (``bandits.ope``: IPS, self-normalised IPS, doubly robust, with
percentile-bootstrap intervals; DM for reference, its interval not meaningful).

Candidate policies are context-free distributions over items per position, like the Open Bandit
validation's (``PerPositionPolicy``):

* ``logged``: the log's own item-at-position frequencies — a sanity check, its estimate is the
  logged CTR;
* ``uniform``: uniform over the items the log showed at each position;
* ``scores``: at each position, the items the log showed there with probability
  ``∝ exp(score / temperature)`` (scores from a file; unscored items score 0).

They stay on the items the log showed at each position because IPS can only credit what the
logging policy could have shown. Serving logs propensity 1 for the ranked slots (a deterministic
ranking) and Thompson's probability for exploration slots, so on ranked slots IPS only counts the
rounds where the candidate agrees with the log; ``slots="stochastic"`` restricts the evaluation
to slots logged with propensity < 1, where the log really explored. The effective sample size
``(Σw)² / Σw²`` says how many rounds the estimate effectively rests on.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bandits.attribution import AttributionConfig
from bandits.impression_ope import attributed_rewards, build_rounds
from bandits.ope import evaluate
from core.errors import SchemaError
from events.models import Impression, Interaction

POLICIES = ("logged", "uniform", "scores")
SLOT_KINDS = ("all", "stochastic")


@dataclass(frozen=True)
class PerPositionPolicy:
    """A context-free target policy: ``table[position][item]`` = probability."""

    table: Mapping[int, Mapping[str, float]]

    def __call__(self, impression: Impression, position: int) -> Mapping[str, float]:
        return self.table.get(position, {})


def _shown_by_position(impressions: Iterable[Impression]) -> dict[int, Counter[str]]:
    shown: dict[int, Counter[str]] = defaultdict(Counter)
    for impression in impressions:
        for slot in impression.items:
            shown[slot.position][slot.item_id] += 1
    return shown


def logged_frequencies(impressions: Iterable[Impression]) -> PerPositionPolicy:
    shown = _shown_by_position(impressions)
    return PerPositionPolicy(
        {k: {i: c / sum(counts.values()) for i, c in counts.items()} for k, counts in shown.items()}
    )


def uniform_over_logged(impressions: Iterable[Impression]) -> PerPositionPolicy:
    shown = _shown_by_position(impressions)
    return PerPositionPolicy(
        {k: {i: 1.0 / len(counts) for i in counts} for k, counts in shown.items()}
    )


def softmax_over_logged(
    impressions: Iterable[Impression], scores: Mapping[str, float], temperature: float = 1.0
) -> PerPositionPolicy:
    if temperature <= 0:
        raise SchemaError(f"temperature must be > 0, got {temperature}")
    table = {}
    for k, counts in _shown_by_position(impressions).items():
        items = sorted(counts)
        logits = np.array([scores.get(i, 0.0) for i in items], dtype=np.float64) / temperature
        weights = np.exp(logits - logits.max())
        table[k] = dict(zip(items, (weights / weights.sum()).tolist(), strict=True))
    return PerPositionPolicy(table)


def stochastic_slots(impressions: Iterable[Impression]) -> list[Impression]:
    """The impressions cut down to their slots logged with propensity < 1 (none: dropped)."""
    out = []
    for impression in impressions:
        kept = tuple(slot for slot in impression.items if slot.propensity < 1.0)
        if kept:
            out.append(impression.model_copy(update={"items": kept}))
    return out


def target_policy(
    name: str,
    impressions: Sequence[Impression],
    scores: Mapping[str, float] | None = None,
    temperature: float = 1.0,
) -> PerPositionPolicy:
    if name == "logged":
        return logged_frequencies(impressions)
    if name == "uniform":
        return uniform_over_logged(impressions)
    if name == "scores":
        if scores is None:
            raise SchemaError("the scores policy needs item scores (--policy-scores)")
        return softmax_over_logged(impressions, scores, temperature)
    raise SchemaError(f"unknown policy {name!r}; choose one of {POLICIES}")


def from_log_estimates(
    impressions: Sequence[Impression],
    interactions: Iterable[Interaction],
    policy: str | PerPositionPolicy,
    attribution: AttributionConfig,
    *,
    scores: Mapping[str, float] | None = None,
    temperature: float = 1.0,
    slots: str = "all",
    n_bootstrap: int = 1_000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Flat figures: the candidate's CTR per slot by IPS/SNIPS/DR/DM with intervals, the
    logged CTR of the same rounds, and the importance-weight diagnostics. ``policy`` is one of
    ``POLICIES`` or a ready ``PerPositionPolicy``."""
    if slots not in SLOT_KINDS:
        raise SchemaError(f"unknown slots {slots!r}; choose one of {SLOT_KINDS}")
    # One copy per request, in event-time order: the estimate (whose cross-fitting folds follow
    # the rounds' order) must not depend on the order the log was read in.
    ordered = sorted(impressions, key=lambda i: (i.event_time_ms, i.request_id))
    first: dict[str, Impression] = {}
    for impression in ordered:
        first.setdefault(impression.request_id, impression)
    unique = list(first.values())
    # rewards are attributed on whole slates, whatever slots are evaluated afterwards
    rewards = attributed_rewards(unique, interactions, attribution)
    evaluated = stochastic_slots(unique) if slots == "stochastic" else unique
    if not evaluated:
        what = "slots logged with propensity < 1" if slots == "stochastic" else "slates"
        raise SchemaError(f"the log holds no {what} to evaluate", reason="empty_log")
    target = (
        policy
        if isinstance(policy, PerPositionPolicy)
        else target_policy(policy, evaluated, scores, temperature)
    )
    built = build_rounds(evaluated, rewards)
    index = {item: i for i, item in enumerate(built.item_ids)}
    dist = np.zeros((len(built.rounds), built.rounds.n_actions))
    for row, (imp, pos) in enumerate(zip(built.impressions, built.slot_positions, strict=True)):
        for item, prob in target(imp, pos).items():
            if item not in index:  # IPS cannot credit what the log never showed
                raise SchemaError(f"the candidate policy chose {item!r}, never logged")
            dist[row, index[item]] = prob
    rounds = built.rounds
    estimates = evaluate(rounds, dist, n_bootstrap=n_bootstrap, level=level, seed=seed)
    weights = dist[np.arange(len(rounds)), rounds.action] / rounds.pscore
    figures: dict[str, Any] = {
        "policy": policy if isinstance(policy, str) else "custom",
        "slots": slots,
        "slates": len(evaluated),
        "rounds": len(rounds),
        "logged_ctr": float(rounds.reward.mean()),
        "bootstrap_resamples": n_bootstrap,
        "interval_level": level,
        "seed": seed,
        "max_importance_weight": float(weights.max()),
        "effective_sample_size": float(weights.sum() ** 2 / (weights**2).sum())
        if (weights**2).sum() > 0
        else 0.0,
    }
    for name, est in estimates.items():
        figures[f"{name}"] = est.value
        figures[f"{name}_ci_low"] = est.ci_low
        figures[f"{name}_ci_high"] = est.ci_high
    return {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v)
        for k, v in figures.items()
    }
