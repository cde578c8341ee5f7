"""Event-time bookkeeping: partition watermarks, lateness and bounded de-duplication. Pure.

Vocabulary (docs/architecture.md, event-time rules):

* **watermark** of a source partition — the largest event time seen on it so far (``None`` before
  the first event). It only moves forward and never reads the wall clock.
* **late** — an event with ``event_time < watermark − allowed_lateness``: it is not applied, it is
  routed to the late-events topic and counted. An event is judged against the watermark *before*
  it is folded in, so the first event of a partition is never late.
* **future** — an event more than ``max_future_skew`` ahead of the wall clock when it is processed;
  a dead letter (reason ``future_event_time``), because accepting it would push the watermark
  ahead and make every later event of the partition late. This validity check is the only use of
  the wall clock, and it is an argument (``now_ms``), never read here; it cannot make a replay
  differ except for events that were already bogus when first processed. (A watermark-relative
  rule would be wrong: real streams and historical replays have quiet gaps longer than any skew.)

Why the de-duplication state may forget
---------------------------------------
Each keyed state remembers the ids of the events it applied (the user state event ids, the
impressions step's slate memory request ids per partition), but only those with
``event_time >= cutoff`` where ``cutoff = watermark − allowed_lateness − dedup_horizon``.
Forgetting the older ids is safe: the watermark never decreases, so any later copy of a forgotten
event has ``event_time < cutoff <= watermark − allowed_lateness`` and is rejected as *late* before
de-duplication is consulted. It can therefore never be applied twice. The extra ``dedup_horizon``
keeps ids long enough for re-deliveries that arrive late in wall time but within the lateness in
event time. The item state keeps no ids for updates from the source topics: those sides forward
each event once, and the item state skips a re-forwarded copy by its source offset
(``streams.item_features.apply_update``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum


class Verdict(StrEnum):
    APPLY = "apply"
    LATE = "late"
    FUTURE = "future"


@dataclass(frozen=True, slots=True)
class Lateness:
    """The admission policy; built from ``settings.stream``."""

    allowed_lateness_ms: int = 60_000
    dedup_horizon_ms: int = 24 * 3600 * 1000
    max_future_skew_ms: int = 24 * 3600 * 1000

    def dedup_cutoff(self, watermark_ms: int | None) -> int | None:
        """Ids of events older than this may be forgotten (see the module docstring)."""
        if watermark_ms is None:
            return None
        return watermark_ms - self.allowed_lateness_ms - self.dedup_horizon_ms


def judge(
    watermark_ms: int | None, event_time_ms: int, policy: Lateness, now_ms: int | None = None
) -> Verdict:
    """Classify one event against its partition's watermark (before the event is folded in).

    ``now_ms`` is the processing wall clock for the future check; ``None`` skips that check.
    """
    if now_ms is not None and event_time_ms > now_ms + policy.max_future_skew_ms:
        return Verdict.FUTURE
    if watermark_ms is not None and event_time_ms < watermark_ms - policy.allowed_lateness_ms:
        return Verdict.LATE
    return Verdict.APPLY


def advance(watermark_ms: int | None, event_time_ms: int) -> int:
    """The watermark after seeing an event: the maximum event time so far."""
    return event_time_ms if watermark_ms is None else max(watermark_ms, event_time_ms)


def remember(seen: dict[str, int], event_id: str, event_time_ms: int) -> bool:
    """Record ``event_id`` in ``seen`` (in place); ``False`` if it was already there (a duplicate)."""
    if event_id in seen:
        return False
    seen[event_id] = event_time_ms
    return True


def forget_before(seen: Mapping[str, int], cutoff_ms: int | None) -> dict[str, int]:
    """The seen-ids map without ids older than ``cutoff_ms`` (safe to forget, see above)."""
    if cutoff_ms is None:
        return dict(seen)
    return {event_id: t for event_id, t in seen.items() if t >= cutoff_ms}
