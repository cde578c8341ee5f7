"""Per-arm read-out of one experiment from its logged slates. Pure (numpy/scipy), no I/O.

Input: :class:`evaluation.experiment_log.SlateRecord` s (slates with attributed clicks and
dismissals) and the experiment's configured arm weights. Output: an :class:`ExperimentReadout`
with, per arm, users, impressions, CTR and dismiss rate (delta-method intervals over users),
catalogue coverage and Gini of exposure (user-level cluster bootstrap); each arm against the
control (delta-method z-test on CTR; guardrails flagged when they degrade significantly);
the sample-ratio-mismatch check; and, for interleaving arms, the team-draft preference with a
sign test. The statistics and why each was chosen: ``evaluation.experiment_stats``; the
flat figures and the table: ``evaluation.experiment_output``.

Which slates count where:

* **A/B figures and the SRM check** use randomised slates only: a slate whose request forced this
  experiment's arm by override (QA, demos) did not get its arm by the hash, and would bias both.
* **Interleaving** uses every slate of an interleaving arm (such arms are often reachable only by
  override while they are tried). Its CTR is a blend of two rankers, so it is reported but not
  tested against the control.
* **Coverage** is the share of the experiment's shown items (the union over all its arms) that
  the arm showed; **Gini** is over the same items, never-shown ones counting as zero exposure.

Guardrails: dismiss rate (worse when higher), coverage (worse when lower), Gini of exposure
(worse when higher). One is flagged when the two-sided ``1 − alpha`` interval of the difference
lies entirely on the worse side. p-values are not corrected for several arms or metrics; with
more than one treatment arm, read them with that in mind.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.errors import ConfigError
from evaluation.experiment_log import SlateRecord, interleaved_rankers
from evaluation.experiment_stats import (
    SRM_P_THRESHOLD,
    BootstrapEstimate,
    ExposureComparison,
    InterleavingPreference,
    RatioComparison,
    RatioEstimate,
    SampleRatioCheck,
    compare_exposure,
    compare_ratios,
    exposure_estimates,
    exposure_matrix,
    impression_winner,
    interleaving_preference,
    ratio_estimate,
    sample_ratio_mismatch,
)


@dataclass(frozen=True)
class ReadoutConfig:
    alpha: float = 0.05  # two-sided; intervals are 1 − alpha
    srm_threshold: float = SRM_P_THRESHOLD
    n_bootstrap: int = 500  # coverage and Gini resamples
    seed: int = 0

    @property
    def level(self) -> float:
        return 1.0 - self.alpha


@dataclass(frozen=True)
class ArmFigures:
    arm: str
    weight: float | None  # None: the arm is in the log but not in the configuration
    users: int
    impressions: int
    slots: int
    clicks: int
    dismissals: int
    ctr: RatioEstimate
    dismiss_rate: RatioEstimate
    coverage: BootstrapEstimate
    gini: BootstrapEstimate
    interleaved: bool
    forced_impressions: int  # slates of this arm that were forced by override (not counted above)


@dataclass(frozen=True)
class ArmComparison:
    arm: str
    control: str
    ctr: RatioComparison
    ctr_significant: bool
    dismiss_rate: RatioComparison
    exposure: ExposureComparison
    guardrails_degraded: tuple[str, ...]  # names of guardrail metrics that got worse


@dataclass(frozen=True)
class InterleavingFigures:
    arm: str
    ranker_a: str
    ranker_b: str
    preference: InterleavingPreference
    significant: bool
    favours: str | None  # ranker_a / ranker_b when significant


@dataclass(frozen=True)
class ExperimentReadout:
    experiment: str
    control: str | None
    arms: list[ArmFigures]
    comparisons: list[ArmComparison]
    interleaving: list[InterleavingFigures]
    srm: SampleRatioCheck
    config: ReadoutConfig = field(default_factory=ReadoutConfig)


@dataclass
class _ArmData:
    """One arm's randomised slates, summed per user."""

    users: dict[str, list[int]] = field(default_factory=dict)  # user -> [slots, clicks, dismissals]
    exposure: dict[str, dict[int, int]] = field(default_factory=dict)  # user -> {item col: slots}
    impressions: int = 0
    forced: int = 0
    interleaved: bool = False

    def add(self, record: SlateRecord, column: Mapping[str, int]) -> None:
        sums = self.users.setdefault(record.user_id, [0, 0, 0])
        sums[0] += record.slots
        sums[1] += len(record.clicked)
        sums[2] += len(record.dismissed)
        seen = self.exposure.setdefault(record.user_id, {})
        for item in record.items:
            col = column[item]
            seen[col] = seen.get(col, 0) + 1
        self.impressions += 1

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(slots, clicks, dismissals) per user, users in sorted order."""
        table = np.array([self.users[u] for u in sorted(self.users)], dtype=np.float64)
        table = table.reshape(-1, 3)
        return table[:, 0], table[:, 1], table[:, 2]


def read_out(
    records: Sequence[SlateRecord],
    experiment: str,
    weights: Mapping[str, float],
    *,
    control: str | None = None,
    config: ReadoutConfig = ReadoutConfig(),
) -> ExperimentReadout:
    """The read-out of ``experiment``; ``weights`` are its configured arms in file order.

    ``control`` defaults to the first configured arm with a positive weight that does not
    interleave.
    """
    mine = [r for r in records if experiment in r.arms]
    catalogue = sorted({item for r in mine for item in r.items})
    column = {item: i for i, item in enumerate(catalogue)}
    data: dict[str, _ArmData] = defaultdict(_ArmData)
    interleaved_records: dict[str, list[SlateRecord]] = defaultdict(list)
    for record in mine:
        arm = record.arms[experiment]
        arm_data = data[arm]
        if record.teams is not None:
            arm_data.interleaved = True
            interleaved_records[arm].append(record)
        if experiment in record.forced:
            arm_data.forced += 1
        else:
            arm_data.add(record, column)
    arm_names = [*weights, *sorted(set(data) - set(weights))]
    figures = [
        _arm_figures(arm, weights.get(arm), data[arm], len(catalogue), config) for arm in arm_names
    ]
    if control is None:
        control = next(
            (a.arm for a in figures if a.weight is not None and a.weight > 0 and not a.interleaved),
            None,
        )
    elif control not in weights and control not in data:
        raise ConfigError(f"experiment {experiment!r} has no arm {control!r} to use as control")
    comparisons = [
        _compare(arm, control, data, len(catalogue), config)
        for arm in arm_names
        if control is not None and arm != control and not data[arm].interleaved and data[arm].users
    ]
    srm = sample_ratio_mismatch(
        {arm: len(data[arm].users) for arm in arm_names if data[arm].users},
        weights,
        config.srm_threshold,
    )
    interleaving = [
        _interleaving(arm, interleaved_records[arm], config) for arm in sorted(interleaved_records)
    ]
    return ExperimentReadout(experiment, control, figures, comparisons, interleaving, srm, config)


def _arm_figures(
    arm: str, weight: float | None, data: _ArmData, n_items: int, config: ReadoutConfig
) -> ArmFigures:
    slots, clicks, dismissals = data.arrays()
    users = sorted(data.users)
    exposure = exposure_estimates(
        exposure_matrix([data.exposure[u] for u in users], n_items),
        config.n_bootstrap,
        config.level,
        config.seed,
    )
    return ArmFigures(
        arm=arm,
        weight=weight,
        users=len(users),
        impressions=data.impressions,
        slots=int(slots.sum()),
        clicks=int(clicks.sum()),
        dismissals=int(dismissals.sum()),
        ctr=ratio_estimate(clicks, slots, config.level),
        dismiss_rate=ratio_estimate(dismissals, slots, config.level),
        coverage=exposure["coverage"],
        gini=exposure["gini"],
        interleaved=data.interleaved,
        forced_impressions=data.forced,
    )


def _compare(
    arm: str, control: str, data: Mapping[str, _ArmData], n_items: int, config: ReadoutConfig
) -> ArmComparison:
    c_slots, c_clicks, c_dismissals = data[control].arrays()
    t_slots, t_clicks, t_dismissals = data[arm].arrays()
    ctr = compare_ratios((c_clicks, c_slots), (t_clicks, t_slots), config.level)
    dismiss = compare_ratios((c_dismissals, c_slots), (t_dismissals, t_slots), config.level)

    def matrix(name: str) -> Any:
        arm_data = data[name]
        return exposure_matrix([arm_data.exposure[u] for u in sorted(arm_data.users)], n_items)

    exposure = compare_exposure(
        matrix(control), matrix(arm), config.n_bootstrap, config.level, config.seed
    )
    degraded = []
    if dismiss.ci_low > 0:
        degraded.append("dismiss_rate")
    if exposure.coverage.ci_high < 0:
        degraded.append("coverage")
    if exposure.gini.ci_low > 0:
        degraded.append("gini")
    return ArmComparison(
        arm=arm,
        control=control,
        ctr=ctr,
        ctr_significant=ctr.p_value < config.alpha,
        dismiss_rate=dismiss,
        exposure=exposure,
        guardrails_degraded=tuple(degraded),
    )


def _interleaving(
    arm: str, records: Sequence[SlateRecord], config: ReadoutConfig
) -> InterleavingFigures:
    outcomes = []
    for record in records:
        assert record.teams is not None
        winner = impression_winner(record.teams, record.clicked)
        if winner is not None:
            outcomes.append(winner)
    preference = interleaving_preference(outcomes, config.level)
    names = next(
        (n for r in records if (n := interleaved_rankers(r.model_version)) is not None),
        ("A", "B"),
    )
    significant = preference.p_value < config.alpha and preference.wins_a != preference.wins_b
    favours = None
    if significant:
        favours = names[0] if preference.wins_a > preference.wins_b else names[1]
    return InterleavingFigures(arm, names[0], names[1], preference, significant, favours)
