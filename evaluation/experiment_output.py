"""An experiment read-out as output: one flat figures object (``--json``) and a terminal table.

Flat keys are ``<experiment>.<figure>`` for the experiment and ``<experiment>.<arm>.<figure>``
per arm (comparisons with the control and the interleaving preference under the arm that was
compared); NaN and infinities become null, so the object is valid JSON.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from evaluation.experiment_readout import ExperimentReadout
from evaluation.experiment_stats import BootstrapEstimate, RatioEstimate


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.floating | np.integer):
        return _clean(value.item())
    return value


def flat_figures(readout: ExperimentReadout) -> dict[str, Any]:
    """One flat ``{"<experiment>.<arm>.<figure>": value}`` object (NaN/inf → null)."""
    e = readout.experiment
    out: dict[str, Any] = {
        f"{e}.control": readout.control,
        f"{e}.alpha": readout.config.alpha,
        f"{e}.srm_chi2": readout.srm.chi2,
        f"{e}.srm_p_value": readout.srm.p_value,
        f"{e}.srm_flagged": readout.srm.flagged,
        f"{e}.srm_threshold": readout.config.srm_threshold,
    }
    for arm in readout.arms:
        p = f"{e}.{arm.arm}."
        out.update(
            {
                p + "weight": arm.weight,
                p + "expected_share": readout.srm.expected_share.get(arm.arm),
                p + "observed_share": readout.srm.observed_share.get(arm.arm),
                p + "users": arm.users,
                p + "impressions": arm.impressions,
                p + "slots": arm.slots,
                p + "clicks": arm.clicks,
                p + "dismissals": arm.dismissals,
                p + "forced_impressions": arm.forced_impressions,
                p + "interleaved": arm.interleaved,
            }
        )
        for name in ("ctr", "dismiss_rate"):
            est: RatioEstimate = getattr(arm, name)
            out.update(
                {
                    p + name: est.value,
                    p + f"{name}_ci_low": est.ci_low,
                    p + f"{name}_ci_high": est.ci_high,
                }
            )
        for name in ("coverage", "gini"):
            boot: BootstrapEstimate = getattr(arm, name)
            out.update(
                {
                    p + name: boot.value,
                    p + f"{name}_ci_low": boot.ci_low,
                    p + f"{name}_ci_high": boot.ci_high,
                }
            )
    for c in readout.comparisons:
        p = f"{e}.{c.arm}."
        out.update(
            {
                p + "ctr_diff": c.ctr.difference,
                p + "ctr_diff_ci_low": c.ctr.ci_low,
                p + "ctr_diff_ci_high": c.ctr.ci_high,
                p + "ctr_lift": c.ctr.relative,
                p + "ctr_lift_ci_low": c.ctr.relative_ci_low,
                p + "ctr_lift_ci_high": c.ctr.relative_ci_high,
                p + "ctr_z": c.ctr.z,
                p + "ctr_p_value": c.ctr.p_value,
                p + "ctr_significant": c.ctr_significant,
                p + "dismiss_rate_diff": c.dismiss_rate.difference,
                p + "dismiss_rate_diff_ci_low": c.dismiss_rate.ci_low,
                p + "dismiss_rate_diff_ci_high": c.dismiss_rate.ci_high,
                p + "dismiss_rate_p_value": c.dismiss_rate.p_value,
                p + "exposure_users_per_draw": c.exposure.users_per_draw,
                p + "coverage_diff": c.exposure.coverage.value,
                p + "coverage_diff_ci_low": c.exposure.coverage.ci_low,
                p + "coverage_diff_ci_high": c.exposure.coverage.ci_high,
                p + "gini_diff": c.exposure.gini.value,
                p + "gini_diff_ci_low": c.exposure.gini.ci_low,
                p + "gini_diff_ci_high": c.exposure.gini.ci_high,
                p + "guardrails_degraded": ",".join(c.guardrails_degraded),
            }
        )
        for name in ("dismiss_rate", "coverage", "gini"):
            out[p + f"guardrail_{name}_degraded"] = name in c.guardrails_degraded
    for i in readout.interleaving:
        p = f"{e}.{i.arm}.interleaving_"
        pref = i.preference
        out.update(
            {
                p + "ranker_a": i.ranker_a,
                p + "ranker_b": i.ranker_b,
                p + "impressions": pref.impressions,
                p + "wins_a": pref.wins_a,
                p + "wins_b": pref.wins_b,
                p + "ties": pref.ties,
                p + "preference": pref.preference,
                p + "win_share_a": pref.win_share_a,
                p + "win_share_a_ci_low": pref.win_share_ci_low,
                p + "win_share_a_ci_high": pref.win_share_ci_high,
                p + "p_value": pref.p_value,
                p + "significant": i.significant,
                p + "favours": i.favours,
            }
        )
    return {key: _clean(value) for key, value in out.items()}


def _pct(value: float, digits: int = 2) -> str:
    return "—" if not math.isfinite(value) else f"{100 * value:.{digits}f}%"


def _interval(low: float, high: float, digits: int = 2, lead: str = "") -> str:
    if not (math.isfinite(low) and math.isfinite(high)):
        return ""
    return f"{lead}[{100 * low:.{digits}f}, {100 * high:.{digits}f}]"


def _number(value: float) -> str:
    return f"{value:.3f}" if math.isfinite(value) else "—"


def _bracket(low: float, high: float) -> str:
    return f"[{low:.3f}, {high:.3f}]" if math.isfinite(low) and math.isfinite(high) else ""


def format_table(readout: ExperimentReadout) -> str:
    """The read-out as text for a terminal."""
    level = f"{100 * readout.config.level:.0f}%"
    srm = readout.srm
    lines = [
        f"experiment {readout.experiment}  (control: {readout.control or '—'}; intervals {level})",
        f"  sample ratio: chi2 {srm.chi2:.2f}, p {srm.p_value:.3g}"
        + (
            "  ** MISMATCH: assignment or logging is broken, do not trust the arms **"
            if srm.flagged
            else "  ok"
        ),
        f"  {'arm':<18}{'users':>8}{'impr.':>9}  {'CTR':<24}{'dismiss rate':<24}"
        f"{'coverage':<24}{'Gini':<22}",
    ]
    for a in readout.arms:
        tag = " (interleaved)" if a.interleaved else ""
        ctr = _pct(a.ctr.value) + " " + _interval(a.ctr.ci_low, a.ctr.ci_high)
        dismiss = a.dismiss_rate
        dismiss_text = _pct(dismiss.value) + " " + _interval(dismiss.ci_low, dismiss.ci_high)
        cover = a.coverage
        cover_text = _pct(cover.value, 1) + " " + _interval(cover.ci_low, cover.ci_high, 1)
        lines.append(
            f"  {a.arm + tag:<18}{a.users:>8}{a.impressions:>9}  "
            f"{ctr:<24}{dismiss_text:<24}{cover_text:<24}"
            f"{_number(a.gini.value)} {_bracket(a.gini.ci_low, a.gini.ci_high)}"
        )
        if a.forced_impressions:
            lines.append(f"  {'':<18}{a.forced_impressions} forced impressions not counted")
    for c in readout.comparisons:
        verdict = "significant" if c.ctr_significant else "not significant"
        lift = _pct(c.ctr.relative, 1) + _interval(
            c.ctr.relative_ci_low, c.ctr.relative_ci_high, 1, " "
        )
        lines.append(
            f"  {c.arm} vs {c.control}: CTR {100 * c.ctr.difference:+.3f} pts "
            f"{_interval(c.ctr.ci_low, c.ctr.ci_high, 3)}, lift {lift}, "
            f"z {c.ctr.z:.2f}, p {c.ctr.p_value:.3g} ({verdict}, delta-method z-test)"
        )
        degraded = ", ".join(c.guardrails_degraded) or "none"
        lines.append(f"  {'':<4}guardrails degraded: {degraded}")
    for i in readout.interleaving:
        p = i.preference
        verdict = f"favours {i.favours}" if i.favours else "no significant preference"
        lines.append(
            f"  {i.arm} (team draft, A={i.ranker_a}, B={i.ranker_b}): {p.impressions} impressions "
            f"with a credited click, A wins {p.wins_a}, B wins {p.wins_b}, ties {p.ties}; "
            f"preference {p.preference:+.3f}, sign test p {p.p_value:.3g} ({verdict})"
        )
    return "\n".join(lines)
