"""OPE on the system's own log format against a known stochastic logging policy: the candidate's
true CTR is known, and each estimator's interval must hold it."""

from __future__ import annotations

import pytest

from bandits.attribution import AttributionConfig
from bandits.logged_simulation import LoggedWorld
from core.errors import SchemaError
from evaluation.log_ope import (
    PerPositionPolicy,
    from_log_estimates,
    softmax_over_logged,
    stochastic_slots,
)

ATTRIBUTION = AttributionConfig(window_ms=60_000, allowed_lateness_ms=0)
WORLD = LoggedWorld.example()
# Twelve intervals are checked below; at 95 % one of them would miss its truth about half the
# time by design, so the checks use 99 % intervals (the log and the bootstrap are seeded).
LEVEL = 0.99


@pytest.fixture(scope="module")
def log():
    return WORLD.simulate(6_000, seed=7)


def covers(figures, truth):
    for name in ("ipw", "snipw", "dr"):
        assert figures[f"{name}_ci_low"] <= truth <= figures[f"{name}_ci_high"], (name, truth)
        assert figures[name] == pytest.approx(truth, rel=0.15), name


def test_a_candidate_that_favours_good_items_is_estimated_within_its_interval(log):
    impressions, events = log
    scores = {item: 10 * rate for item, rate in WORLD.click.items()}  # prefers higher CTRs
    figures = from_log_estimates(
        impressions,
        events,
        "scores",
        ATTRIBUTION,
        scores=scores,
        n_bootstrap=300,
        level=LEVEL,
        seed=1,
    )
    target = softmax_over_logged(impressions, scores).table
    truth = WORLD.true_value([target[k] for k in range(3)])
    assert truth > WORLD.true_value(WORLD.logging) * 1.2  # a real difference from the log
    covers(figures, truth)
    assert figures["rounds"] == 3 * 6_000 and figures["effective_sample_size"] < 18_000


def test_uniform_and_logged_policies(log):
    impressions, events = log
    uniform = from_log_estimates(
        impressions, events, "uniform", ATTRIBUTION, n_bootstrap=300, level=LEVEL
    )
    truth = WORLD.true_value([{i: 0.25 for i in dist} for dist in WORLD.logging])
    covers(uniform, truth)
    logged = from_log_estimates(
        impressions, events, "logged", ATTRIBUTION, n_bootstrap=300, level=LEVEL
    )
    covers(logged, WORLD.true_value(WORLD.logging))
    assert logged["snipw"] == pytest.approx(logged["logged_ctr"], rel=0.03)


def test_only_stochastic_slots_are_evaluated_when_asked(log):
    impressions, events = log
    pinned = [
        i.model_copy(
            update={
                "items": (
                    *i.items,
                    i.items[0].model_copy(
                        update={"item_id": "pin", "position": 3, "propensity": 1.0}
                    ),
                )
            }
        )
        for i in impressions[:500]
    ]
    assert all(len(i.items) == 3 for i in stochastic_slots(pinned))
    figures = from_log_estimates(
        pinned, events, "uniform", ATTRIBUTION, slots="stochastic", n_bootstrap=50
    )
    assert figures["rounds"] == 3 * 500


def test_a_deterministic_candidate_is_estimated_from_the_rounds_that_agree_with_it(log):
    impressions, events = log
    best = {k: {max(dist, key=WORLD.click.get): 1.0} for k, dist in enumerate(WORLD.logging)}
    truth = WORLD.true_value([best[k] for k in range(3)])
    figures = from_log_estimates(
        impressions, events, PerPositionPolicy(best), ATTRIBUTION, n_bootstrap=300, level=LEVEL
    )
    covers(figures, truth)
    assert figures["max_importance_weight"] == pytest.approx(10.0)  # 1 / propensity 0.1


def test_bad_requests_are_clear_errors(log):
    impressions, events = log
    with pytest.raises(SchemaError):
        from_log_estimates(impressions, events, "greedy", ATTRIBUTION)
    with pytest.raises(SchemaError):
        from_log_estimates(impressions, events, "scores", ATTRIBUTION)
    deterministic = [
        i.model_copy(
            update={"items": tuple(s.model_copy(update={"propensity": 1.0}) for s in i.items)}
        )
        for i in impressions[:10]
    ]
    with pytest.raises(SchemaError):
        from_log_estimates(deterministic, events, "uniform", ATTRIBUTION, slots="stochastic")
