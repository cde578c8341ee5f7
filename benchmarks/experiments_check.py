"""The fast path of ``aether bench experiments`` against the whole read-out path.

The benchmark's runs count clicks per user straight from the precomputed slates. Here one A/B run
and one interleaving run are also turned into what production would log — one ``Impression`` per
slate (arm label, teams in the context) and click/dismiss events carrying its ``request_id`` — and
read out the way ``aether experiments report`` does (attribution in event time →
``evaluation.experiment_log.slate_records`` → ``evaluation.experiment_readout.read_out``). The
figures must agree; their differences are reported.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from bandits.attribution import AttributionConfig
from benchmarks.experiments_world import EXPERIMENT, ArmSlates, ExperimentWorld, Served, serve
from evaluation.experiment_log import TEAMS_CONTEXT_KEY, slate_records
from evaluation.experiment_readout import ReadoutConfig, read_out
from evaluation.experiment_stats import compare_ratios, interleaving_preference
from events.models import Impression, Interaction


def _logged(
    slates: ArmSlates, served: Served, arm: str, tag: str
) -> tuple[list[Impression], list[Interaction]]:
    impressions, events = [], []
    for n, (owner, row) in enumerate(zip(served.owner, served.rows, strict=True)):
        original = slates.impressions[row]
        request_id, user = f"{tag}-{n}", f"{tag}-user-{owner}"
        context = {}
        if TEAMS_CONTEXT_KEY in original.context:
            context[TEAMS_CONTEXT_KEY] = original.context[TEAMS_CONTEXT_KEY]
        impressions.append(
            original.model_copy(
                update={
                    "request_id": request_id,
                    "user_id": user,
                    "experiment_arm": f"{EXPERIMENT}={arm}",
                    "context": context,
                }
            )
        )
        for p, slot in enumerate(original.items):
            kind = None
            if served.clicked[n, p]:
                kind = "click"
            elif served.examined[n, p] and slates.disliked[row, p]:
                kind = "dismiss"
            if kind:
                events.append(
                    Interaction(
                        event_id=f"{request_id}:{p}",
                        event_type=kind,
                        user_id=user,
                        item_id=slot.item_id,
                        event_time=original.event_time_ms + 1_000 + p,
                        request_id=request_id,
                    )
                )
    return impressions, events


def full_path_check(world: ExperimentWorld, users: int, alpha: float, seed: int) -> dict[str, Any]:
    started = time.perf_counter()
    rng = np.random.default_rng(seed + 7)
    k = world.arms["model"].liked.shape[1]
    drawn = rng.integers(0, len(world.users), size=users)
    treated = rng.random(users) < 0.5
    impressions: list[Impression] = []
    events: list[Interaction] = []
    fast: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for arm, mask in (("popularity", ~treated), ("model", treated)):
        slates = world.arms[arm]
        served = serve(slates, drawn[mask], rng, k)
        clicks = np.bincount(served.owner, served.clicked.sum(axis=1), minlength=int(mask.sum()))
        slots = np.bincount(
            served.owner, slates.shown[served.rows].sum(axis=1), minlength=int(mask.sum())
        )
        fast[arm] = (clicks, slots)
        logged, reactions = _logged(slates, served, arm, f"ab-{arm}")
        impressions += logged
        events += reactions
    slates = world.arms["interleaved"]
    served = serve(slates, rng.integers(0, len(world.users), size=users), rng, k)
    logged, reactions = _logged(slates, served, "interleaved", "il")
    impressions += logged
    events += reactions
    teams = slates.teams[served.rows]
    a = (served.clicked & (teams == 1)).sum(axis=1)
    b = (served.clicked & (teams == 2)).sum(axis=1)
    fast_il = interleaving_preference(
        [o for o in np.where(a > b, "A", np.where(b > a, "B", np.where(a > 0, "tie", ""))) if o]
    )

    records = slate_records(impressions, events, AttributionConfig())
    weights = {"popularity": 1.0, "model": 1.0, "interleaved": 0.0}
    readout = read_out(
        records,
        EXPERIMENT,
        weights,
        control="popularity",
        config=ReadoutConfig(alpha=alpha, n_bootstrap=50),
    )
    [comparison] = readout.comparisons
    fast_ab = compare_ratios(fast["popularity"], fast["model"], 1 - alpha)
    [il] = readout.interleaving
    return {
        "check_users_per_run": users,
        "check_impressions": len(impressions),
        "check_events": len(events),
        "check_ab_ctr_diff_abs_error": abs(comparison.ctr.difference - fast_ab.difference),
        "check_ab_p_value_abs_error": abs(comparison.ctr.p_value - fast_ab.p_value),
        "check_interleaving_wins_equal": (
            il.preference.wins_a,
            il.preference.wins_b,
            il.preference.ties,
        )
        == (fast_il.wins_a, fast_il.wins_b, fast_il.ties),
        "check_seconds": round(time.perf_counter() - started, 1),
    }
