"""Online bandit posteriors, exploration and off-policy evaluation (pure logic, no I/O clients).

Pipeline (each step a plain ``(state, event) -> (state, outputs)`` function)::

    impressions + interactions (partitioned by user)
        └─ attribution.attribute ──► posterior.Outcome (one per shown slot, decided in event time)
              └─ posterior.apply_outcome (partitioned by item) ──► PosteriorWrite (Redis HSET)
    serving: posterior.posterior_read_plan / decode_posteriors ──► exploration.thompson_explore
    offline: ope (IPS / SNIPS / DR), impression_ope (own logs), obd (Open Bandit), simulation

Modules: ``discounted`` (exact event-time discounted sums), ``posterior``, ``attribution``,
``exploration``, ``ope``, ``impression_ope``, ``obd``, ``simulation``.
See ``docs/benchmarks/bandits.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bandits.attribution import AttributionConfig
from bandits.posterior import PosteriorConfig

if TYPE_CHECKING:
    from core.settings import Settings


def configs_from_settings(settings: Settings) -> tuple[AttributionConfig, PosteriorConfig]:
    """Build the pure configs from ``settings.bandit`` (and the stream's allowed lateness)."""
    bandit = settings.bandit
    attribution = AttributionConfig(
        window_ms=bandit.attribution_window_ms,
        allowed_lateness_ms=settings.stream.allowed_lateness_ms,
        segment_keys=tuple(bandit.segment_keys),
    )
    posterior = PosteriorConfig(
        prior_alpha=bandit.prior_alpha,
        prior_beta=bandit.prior_beta,
        half_life_ms=bandit.half_life_ms,
        segment_keys=tuple(bandit.segment_keys),
    )
    return attribution, posterior
