"""The per-arm read-out against hand-computed cases."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.errors import ConfigError
from evaluation.experiment_log import SlateRecord
from evaluation.experiment_output import flat_figures, format_table
from evaluation.experiment_readout import ReadoutConfig, read_out

CONFIG = ReadoutConfig(n_bootstrap=200)


def slate(
    user,
    arm,
    items,
    clicked=(),
    dismissed=(),
    *,
    experiment="ranker",
    forced=False,
    teams=None,
    version="m1",
    n=0,
):
    return SlateRecord(
        request_id=f"{user}-{arm}-{n}",
        user_id=user,
        event_time_ms=n,
        arms={experiment: arm, "other": "x"},
        forced=frozenset({experiment}) if forced else frozenset(),
        items=tuple(items),
        positions=tuple(range(len(items))),
        clicked=frozenset(clicked),
        dismissed=frozenset(dismissed),
        teams=teams,
        model_version=version,
    )


def test_per_arm_counts_rates_and_the_difference_by_hand():
    records = [
        # control: u1 two slates (4 slots, 1 click), u2 one slate (2 slots, 0 clicks, 1 dismiss)
        slate("u1", "control", ["a", "b"], clicked=[0], n=1),
        slate("u1", "control", ["c", "d"], n=2),
        slate("u2", "control", ["a", "b"], dismissed=[1], n=3),
        # treatment: u3 2 slots 2 clicks, u4 2 slots 1 click
        slate("u3", "treatment", ["a", "e"], clicked=[0, 1], n=4),
        slate("u4", "treatment", ["a", "f"], clicked=[1], n=5),
        # forced into treatment by override: not counted in the A/B figures
        slate("u5", "treatment", ["a", "b"], clicked=[0, 1], forced=True, n=6),
    ]
    readout = read_out(records, "ranker", {"control": 1, "treatment": 1}, config=CONFIG)
    control, treatment = readout.arms
    assert (control.users, control.impressions, control.slots, control.clicks) == (2, 3, 6, 1)
    assert control.dismissals == 1
    assert control.ctr.value == pytest.approx(1 / 6)
    assert control.dismiss_rate.value == pytest.approx(1 / 6)
    assert (treatment.users, treatment.impressions, treatment.clicks) == (2, 2, 3)
    assert treatment.ctr.value == pytest.approx(3 / 4)
    assert treatment.forced_impressions == 1
    # coverage over the experiment's six shown items a..f: control showed a-d, treatment a, e, f
    assert control.coverage.value == pytest.approx(4 / 6)
    assert treatment.coverage.value == pytest.approx(3 / 6)
    [c] = readout.comparisons
    assert readout.control == "control" and c.arm == "treatment"
    assert c.ctr.difference == pytest.approx(3 / 4 - 1 / 6)
    assert c.ctr.relative == pytest.approx((3 / 4) / (1 / 6) - 1)
    flat = flat_figures(readout)
    assert flat["ranker.treatment.ctr_diff"] == pytest.approx(3 / 4 - 1 / 6)
    assert flat["ranker.control.users"] == 2
    assert flat["ranker.srm_flagged"] is False
    json.dumps(flat, allow_nan=False)  # flat, and valid JSON (NaN → null)
    assert "treatment vs control" in format_table(readout)


def _arm(rng, arm, users, ctr, dismiss=0.02, catalogue=200, start=0):
    records = []
    for u in range(start, start + users):
        for n in range(3):
            items = [f"i{j}" for j in rng.choice(catalogue, size=10, replace=False)]
            clicks = np.flatnonzero(rng.random(10) < ctr)
            dismissed = [p for p in np.flatnonzero(rng.random(10) < dismiss) if p not in clicks]
            records.append(slate(f"u{u}", arm, items, clicks, dismissed, n=n))
    return records


def test_a_real_difference_is_significant_and_a_degraded_guardrail_is_flagged():
    rng = np.random.default_rng(0)
    records = _arm(rng, "control", 1_500, 0.05) + _arm(
        rng, "treatment", 1_500, 0.07, dismiss=0.05, catalogue=40, start=10_000
    )
    readout = read_out(records, "ranker", {"control": 1, "treatment": 1}, config=CONFIG)
    [c] = readout.comparisons
    assert c.ctr_significant and c.ctr.difference > 0
    assert set(c.guardrails_degraded) == {"dismiss_rate", "coverage", "gini"}


def test_an_a_a_split_is_not_significant_and_not_a_sample_ratio_mismatch():
    rng = np.random.default_rng(1)
    records = _arm(rng, "a", 1_000, 0.05) + _arm(rng, "b", 1_000, 0.05, start=10_000)
    readout = read_out(records, "ranker", {"a": 1, "b": 1}, config=CONFIG)
    [c] = readout.comparisons
    assert not c.ctr_significant and c.guardrails_degraded == ()
    assert not readout.srm.flagged


def test_sample_ratio_mismatch_is_flagged_from_users_not_slates():
    rng = np.random.default_rng(2)
    records = _arm(rng, "a", 550, 0.05) + _arm(rng, "b", 450, 0.05, start=10_000)
    readout = read_out(records, "ranker", {"a": 1, "b": 1}, config=CONFIG)
    assert readout.srm.chi2 == pytest.approx(10.0)  # (50² / 500) × 2, p = 0.0016 > 0.001
    assert not readout.srm.flagged
    records += _arm(rng, "a", 100, 0.05, start=20_000)  # 650 / 450: chi2 = 40
    assert read_out(records, "ranker", {"a": 1, "b": 1}, config=CONFIG).srm.flagged


def test_interleaving_arm_credit_comes_from_teams_and_clicked_positions():
    version = "interleaved(sasrec-v1,retrieval-only)"
    records = [
        slate("u1", "mix", ["a", "b", "c"], clicked=[0], teams=("A", "B", None), version=version),
        slate(
            "u2",
            "mix",
            ["a", "b", "c"],
            clicked=[0, 1],
            teams=("A", "B", None),
            version=version,
            forced=True,
        ),
        slate("u3", "mix", ["a", "b", "c"], clicked=[2], teams=("A", "B", None), version=version),
        slate("u4", "mix", ["a", "b", "c"], clicked=[], teams=("B", "A", None), version=version),
        slate("u5", "mix", ["a", "b", "c"], clicked=[0], teams=("B", "A", None), version=version),
    ]
    readout = read_out(records, "ranker", {"control": 1, "mix": 0}, config=CONFIG)
    [i] = readout.interleaving
    # u1: A wins; u2 (forced, still counted): tie; u3: only an uncredited click; u4: no click;
    # u5: B wins
    assert (i.preference.wins_a, i.preference.wins_b, i.preference.ties) == (1, 1, 1)
    assert (i.ranker_a, i.ranker_b) == ("sasrec-v1", "retrieval-only")
    assert not i.significant and i.favours is None
    assert readout.comparisons == []  # an interleaved arm's CTR is a blend: not A/B tested
    # the randomised users of a weight-0 arm are a sample-ratio mismatch
    assert readout.srm.flagged


def test_a_significant_interleaving_preference_names_the_winner():
    teams = ("A", "B")
    records = [
        slate(
            f"u{n}",
            "mix",
            ["a", "b"],
            clicked=[0] if n % 5 else [1],
            teams=teams,
            n=n,
            version="interleaved(new,old)",
            forced=True,
        )
        for n in range(100)
    ]
    [i] = read_out(records, "ranker", {"mix": 0}, config=CONFIG).interleaving
    assert i.significant and i.favours == "new"
    assert i.preference.wins_a == 80 and i.preference.p_value < 1e-8


def test_an_unknown_control_arm_is_a_clear_error():
    records = [slate("u1", "a", ["x"]), slate("u2", "b", ["y"])]
    with pytest.raises(ConfigError, match="no arm 'c'"):
        read_out(records, "ranker", {"a": 1, "b": 1}, control="c", config=CONFIG)
