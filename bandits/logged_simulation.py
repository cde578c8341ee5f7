"""A logged world with known truth, for checking off-policy evaluation on the system's own log
format (``events.Impression`` + ``events.Interaction``). Pure and seeded.

Each slate has one slot per position; position ``k`` shows an item drawn from the logging
policy's distribution ``logging[k]`` (positions draw from disjoint item sets, so a slate never
repeats an item), and logs that probability as the slot's propensity, as serving's exploration
does. The user clicks the item at position ``k`` with probability ``click[item] · examine[k]``
(a position-based click model), a click event carrying the slate's ``request_id`` one second
after the slate. A context-free target policy ``target[k]`` then has the true value
``mean_k Σ_a target[k][a] · click[a] · examine[k]`` (per slot) — what the estimators must find.

    >>> world = LoggedWorld.example()
    >>> impressions, events = world.simulate(50, seed=0)
    >>> len(impressions), all(0 < s.propensity <= 1 for i in impressions for s in i.items)
    (50, True)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from events.models import Impression, ImpressionItem, Interaction

T0_MS = 1_750_000_000_000
Policy = Sequence[Mapping[str, float]]  # per position: item -> probability


@dataclass(frozen=True)
class LoggedWorld:
    logging: Policy
    click: Mapping[str, float]  # item -> click probability when examined
    examine: Sequence[float]  # position -> examination probability

    def __post_init__(self) -> None:
        if len(self.logging) != len(self.examine):
            raise ValueError("one logging distribution and one examination rate per position")
        shown = [set(p) for p in self.logging]
        if sum(len(s) for s in shown) != len(set().union(*shown)):
            raise ValueError("positions must draw from disjoint item sets")
        for dist in self.logging:
            if abs(sum(dist.values()) - 1.0) > 1e-9 or min(dist.values()) <= 0:
                raise ValueError("each logging distribution must be positive and sum to 1")

    @classmethod
    def example(cls) -> LoggedWorld:
        """Three positions over four items each; clicks from 2 % to 30 %."""
        items = [[f"p{k}i{j}" for j in range(4)] for k in range(3)]
        logging = [dict(zip(group, (0.4, 0.3, 0.2, 0.1), strict=True)) for group in items]
        rates = (0.02, 0.08, 0.15, 0.30)
        click = {item: rates[j] for group in items for j, item in enumerate(group)}
        return cls(logging, click, (1.0, 0.7, 0.5))

    def true_value(self, target: Policy) -> float:
        """Expected clicks per slot under ``target`` (same positions as the log)."""
        per_position = [
            sum(p * self.click[item] for item, p in dist.items()) * self.examine[k]
            for k, dist in enumerate(target)
        ]
        return float(np.mean(per_position))

    def simulate(
        self, n_slates: int, *, seed: int = 0, users: int = 500
    ) -> tuple[list[Impression], list[Interaction]]:
        rng = np.random.default_rng(seed)
        impressions: list[Impression] = []
        events: list[Interaction] = []
        for n in range(n_slates):
            at = T0_MS + n * 10_000
            user = f"u{n % users}"
            request_id = f"sim-{seed}-{n}"
            slots = []
            for k, dist in enumerate(self.logging):
                names = list(dist)
                probs = np.array([dist[i] for i in names])
                item = names[int(rng.choice(len(names), p=probs))]
                slots.append(
                    ImpressionItem(
                        item_id=item, position=k, score=0.0, source="explore", propensity=dist[item]
                    )
                )
                if rng.random() < self.click[item] * self.examine[k]:
                    events.append(
                        Interaction.model_validate(  # validated: event time in epoch ms
                            {
                                "event_id": f"{request_id}:{item}",
                                "event_type": "click",
                                "user_id": user,
                                "item_id": item,
                                "event_time": at + 1_000,
                                "request_id": request_id,
                            }
                        )
                    )
            impressions.append(
                Impression.model_validate(
                    {
                        "event_time": at,
                        "request_id": request_id,
                        "user_id": user,
                        "items": tuple(slots),
                        "model_version": "simulated-logging",
                    }
                )
            )
        return impressions, events
