"""Small, sensitive monitor configurations and stream builders for the monitoring tests."""

from __future__ import annotations

import dataclasses
import random

from monitoring import (
    DEFAULT_DETECTORS,
    DetectorKind,
    EventSeen,
    MonitorConfig,
    ServedItem,
    SlateServed,
    SlotOutcome,
)

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def sensitive_config(**changes: object) -> MonitorConfig:
    """Seconds-long windows and loose detectors, so short test streams raise detections."""
    detectors = {
        signal: (
            dataclasses.replace(spec, delta=0.05, grace_period=5)
            if spec.kind is DetectorKind.ADWIN
            else dataclasses.replace(spec, threshold=0.2, min_instances=3)
        )
        for signal, spec in DEFAULT_DETECTORS.items()
    }
    base: dict[str, object] = {
        "window_ms": 1_000,
        "allowed_lateness_ms": 3_000,
        "exposure_block_slots": 40,
        "exposure_hop_slots": 20,
        "exposure_reference_slots": 60,
        "detectors": detectors,
    }
    return MonitorConfig(**{**base, **changes})  # type: ignore[arg-type]


def drifting_stream(
    seed: int, n: int = 600, shift_at: float = 0.5
) -> tuple[list[EventSeen], list[SlateServed], list[SlotOutcome]]:
    """Events, slates and outcomes every ~20 ms whose behaviour changes at ``shift_at``:
    clicks 30 % → 2 %, dismisses 5 % → 40 %, the score +3, source ``a`` 70 % → 10 %."""
    rng = random.Random(seed)
    events, slates, outcomes = [], [], []
    for i in range(n):
        t = T0 + i * 20 + rng.randrange(20)
        late = i >= n * shift_at
        clicked = rng.random() < (0.02 if late else 0.3)
        kind = "dismiss" if rng.random() < (0.4 if late else 0.05) else "view"
        events.append(EventSeen(t, f"e{i}", kind, rng.random() < 0.1, rng.random() < 0.1))
        source = "a" if rng.random() < (0.1 if late else 0.7) else "b"
        item = f"i{rng.randrange(3 if late else 30)}"
        slates.append(
            SlateServed(
                t, f"r{i}", "A", (ServedItem(item, source),), rng.gauss(3 if late else 0, 1)
            )
        )
        outcomes.append(SlotOutcome(t, f"r{i}|0", "A", source, clicked, kind == "dismiss"))
    return events, slates, outcomes
