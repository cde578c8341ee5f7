"""Off-policy evaluation over the project's own impression log (``events.Impression`` + rewards).

Each slot of each logged slate is one round: the logged item, its position, the propensity the
serving policy recorded for it (``ImpressionItem.propensity``) and the reward attributed to it by
the same event-time rules as the online posteriors (:func:`bandits.attribution.replay`, so the
offline label of a slot equals the online one).

The target policy is a callable ``target(impression, position) -> {item_id: probability}``: its
distribution over items for that slot of that request (context is in the impression).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from bandits.attribution import AttributionConfig, Event, WatermarkTick, replay
from bandits.ope import Estimate, LoggedRounds, evaluate
from bandits.posterior import Outcome
from events.models import Impression, Interaction

DEFAULT_ATTRIBUTION = AttributionConfig()
TargetPolicy = Callable[[Impression, int], Mapping[str, float]]


@dataclass(frozen=True)
class ImpressionRounds:
    rounds: LoggedRounds
    item_ids: tuple[str, ...]  # action index -> item id
    impressions: tuple[Impression, ...]  # one per round (the slate it came from)
    slot_positions: tuple[int, ...]


def attributed_outcomes(
    impressions: Iterable[Impression],
    interactions: Iterable[Interaction],
    config: AttributionConfig,
) -> dict[str, Outcome]:
    """``{"request_id|item_id": Outcome}`` for every logged slot, decided in event time.

    Offline the whole log is known, so events are replayed in event-time order (ties: impressions
    first, then by id) and a final watermark tick closes every window. The outcome's ``reason``
    tells a click (``positive``) from a dismissal (``dismiss``) and silence (``no_reward``).
    """
    events: list[Event] = [*impressions, *interactions]
    if not events:
        return {}

    def order(e: Impression | Interaction) -> tuple[int, int, str]:
        if isinstance(e, Impression):
            return (e.event_time_ms, 0, e.request_id)
        return (e.event_time_ms, 1, e.event_id)

    ordered = sorted(events, key=order)  # type: ignore[arg-type]
    last = max(e.event_time_ms for e in ordered)  # type: ignore[union-attr]
    closing = WatermarkTick(last + config.window_ms + config.allowed_lateness_ms)
    _, outputs = replay([*ordered, closing], config)
    return {o.outcome_id: o for o in outputs if isinstance(o, Outcome)}


def attributed_rewards(
    impressions: Iterable[Impression],
    interactions: Iterable[Interaction],
    config: AttributionConfig,
) -> dict[str, bool]:
    """``{"request_id|item_id": success}`` for every logged slot (``attributed_outcomes``)."""
    outcomes = attributed_outcomes(impressions, interactions, config)
    return {key: outcome.success for key, outcome in outcomes.items()}


def build_rounds(
    impressions: Sequence[Impression],
    rewards: Mapping[str, bool],
    extra_items: Iterable[str] = (),
) -> ImpressionRounds:
    """One round per logged slot (first occurrence of an item per slate)."""
    item_ids = sorted({s.item_id for imp in impressions for s in imp.items} | set(extra_items))
    index = {item: i for i, item in enumerate(item_ids)}
    action, position, reward, pscore, owners, slots = [], [], [], [], [], []
    for imp in impressions:
        seen: set[str] = set()
        for slot in imp.items:
            if slot.item_id in seen:
                continue
            seen.add(slot.item_id)
            action.append(index[slot.item_id])
            position.append(slot.position)
            reward.append(float(rewards.get(f"{imp.request_id}|{slot.item_id}", False)))
            pscore.append(slot.propensity)
            owners.append(imp)
            slots.append(slot.position)
    rounds = LoggedRounds(
        action=np.asarray(action, dtype=int),
        position=np.asarray(position, dtype=int),
        reward=np.asarray(reward, dtype=float),
        pscore=np.asarray(pscore, dtype=float),
        n_actions=len(item_ids),
        n_positions=(max(position) + 1) if position else 1,
    )
    return ImpressionRounds(rounds, tuple(item_ids), tuple(owners), tuple(slots))


def evaluate_impression_log(
    impressions: Sequence[Impression],
    interactions: Iterable[Interaction],
    target: TargetPolicy,
    *,
    config: AttributionConfig = DEFAULT_ATTRIBUTION,
    candidate_items: Iterable[str] = (),
    n_bootstrap: int = 1_000,
    seed: int = 0,
) -> dict[str, Estimate]:
    """IPS / SNIPS / DR / DM value of ``target`` (expected reward per slot) from a logged run.

    ``candidate_items`` adds items the target may choose that the log never showed (their reward
    model falls back to the position mean; IPS cannot credit them, which is the usual support
    caveat of off-policy evaluation).
    """
    rewards = attributed_rewards(impressions, interactions, config)
    built = build_rounds(impressions, rewards, candidate_items)
    index = {item: i for i, item in enumerate(built.item_ids)}
    dist = np.zeros((len(built.rounds), built.rounds.n_actions))
    for row, (imp, pos) in enumerate(zip(built.impressions, built.slot_positions, strict=True)):
        for item, prob in target(imp, pos).items():
            if item not in index:
                raise ValueError(f"target policy chose {item!r}; pass it in candidate_items")
            dist[row, index[item]] = prob
    return evaluate(built.rounds, dist, n_bootstrap=n_bootstrap, seed=seed)
