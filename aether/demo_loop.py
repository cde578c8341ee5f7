"""The demo's closed loop, its pure parts (``aether.demo``): which users it serves, from which
event time, the past and future of the cut-off, and what a user does with a slate."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from events import Interaction


@dataclass
class RoundReport:
    round: int
    slates: int
    hits: int
    dismissals: int
    new_items: int  # items not shown to that user in the previous round
    fallbacks: int
    latencies_ms: list[float] = field(default_factory=list)
    new_title_slots: int = 0  # slots given to the titles published mid-loop
    new_title_hits: int = 0  # of those, titles the user liked after the cut-off
    models: set[str] = field(default_factory=set)  # model_version of the round's responses

    @property
    def hit_rate(self) -> float:
        return self.hits / max(1, self.slates)


def closed_loop_users(
    liked: dict[str, set[str]], known: set[str], count: int, seed: int
) -> list[str]:
    """The loop's users: a seeded sample of ``count`` users known before the cut-off who liked
    at least 5 titles after it (the loop's clicks come from those likes)."""
    candidates = sorted(u for u in liked if u in known and len(liked[u]) >= 5)
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(candidates, size=min(count, len(candidates)), replace=False).tolist())


def loop_start_ms(cutoff_ms: int, replayed_until_ms: int | None) -> int:
    """Event time the loop's rounds count from (round ``r`` at ``start + r`` hours): after the
    last rating replayed before it, so that no partition's watermark is ahead of the loop's
    events (they would be late, DESIGN.md §4)."""
    return max(cutoff_ms, replayed_until_ms if replayed_until_ms is not None else cutoff_ms)


def split_at_quantile(
    ratings: pd.DataFrame, quantile: float
) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    cutoff = int(ratings["timestamp_ms"].quantile(quantile))
    past = ratings[ratings["timestamp_ms"] < cutoff]
    future = ratings[ratings["timestamp_ms"] >= cutoff]
    return past, future, cutoff


def feedback_events(
    user: str,
    slate_items: list[str],
    request_id: str,
    liked: set[str],
    disliked: set[str],
    at_ms: int,
    broken_client: bool = False,
) -> tuple[list[Interaction], int, int]:
    """What the user does with a slate, from what they really rated after the cut-off; a broken
    client (the injected drift) dismisses every item it shows."""
    events: list[Interaction] = []
    hits = dismissals = 0
    for position, item in enumerate(slate_items):
        kind = (
            "dismiss"
            if broken_client
            else "click"
            if item in liked
            else "dismiss"
            if item in disliked
            else None
        )
        if kind is None:
            continue
        hits += kind == "click"
        dismissals += kind == "dismiss"
        events.append(
            Interaction(
                event_id=f"demo:{request_id}:{item}:{kind}",
                event_type=kind,
                user_id=user,
                item_id=item,
                event_time=at_ms + position,
                request_id=request_id,
                context={"surface": "demo"},
            )
        )
    return events, hits, dismissals


class EventClock:
    """The demo's serving time: the event time it replays. Impressions are stamped with it, so
    that they and the loop's feedback share one timeline in the worker's reward attribution (a
    2026 wall-clock impression would put the attribution watermark years past the replayed
    feedback, and every click would be late)."""

    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms
