"""Reward attribution in event time: join impressions with later rewards inside a window.

The stream step is a plain function (bytewax style), called per event by a Faust agent or a test:

    attribute(state, event, config) -> (state, [Outcome | Rejected, ...])

``event`` is an ``events.Impression`` (one served slate), an ``events.Interaction`` or a
:class:`WatermarkTick`. Impressions and interactions must be co-partitioned by ``user_id``
(both topics are keyed by ``user_id`` with the same partition count).

Two inputs, two watermarks. The join reads two topics (``<ns>.impressions`` and ``<ns>.events``)
in no set order: a worker may read far ahead on one of them. So each :class:`Input` keeps its own
**watermark** (the largest event time seen on it, as in ``streams.eventtime``), and every rule
below names the input whose watermark it waits for — the input that could still change what it
decides. (One watermark for both, as before issue 21, judged an impression late whenever the
events of the same partition had been read further ahead, and vice versa.)

Rules (``window = [impression_ms, impression_ms + window_ms)``, half-open):

* ``click`` / ``add_to_cart`` / ``purchase`` of the shown item inside the window → success.
  A reward exactly at ``impression_ms`` counts; one exactly at ``impression_ms + window_ms``
  does not.
* ``dismiss`` of the shown item inside the window → failure, decided at once (an explicit
  negative outranks any click in the same window, so the early decision can never change).
* Nothing inside the window → failure, decided only when the **events** watermark minus
  ``allowed_lateness_ms`` reaches ``impression_ms + window_ms``: from then on any accepted
  interaction is at or after the window's end. Only interactions can change a slot's outcome (a
  later impression is another slot), so the impressions watermark does not hold it back. No wall
  clock anywhere.
* A reward carrying ``request_id`` joins only that slate; one without joins every pending slate
  of the same user that showed the item (view-through).
* Rewards that arrive before their impression are buffered until the **impressions** watermark
  minus lateness passes them: only an impression can still claim a buffered reward, and one
  older than that would be late.
* An event with ``event_time < watermark − allowed_lateness_ms`` of **its own input** is late:
  not applied, reported as ``Rejected("late")`` (the agent routes it to the late-events topic
  and counts it). Events too far in the *future* are the agent's dead letters
  (``streams.eventtime.judge``) upstream. A repeated ``event_id`` (interaction) or
  ``request_id`` (impression) is ``Rejected("duplicate")``; each id is remembered until its own
  input's watermark minus lateness passes it (a later copy is late then).
* A :class:`WatermarkTick` moves one input's watermark up (the idleness rule of
  ``streams.bandit_steps``), or every input's (``input=None``: an offline replay's closing tick).

Hence the emitted set of outcomes, and every final state, depends only on the set of events
and not on how the two inputs interleave, as long as no event arrives beyond the allowed
lateness behind its own input's watermark; replays equal. The argument: a slot is decided once
``events watermark − lateness ≥ impression + window``, so every reward inside its window has
arrived or would be late; a buffered reward is dropped once ``impressions watermark − lateness``
passes it, so an impression it could match has arrived or would be late.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from bandits.posterior import DEFAULT_SEGMENT_KEYS, Outcome, segment_of
from events.models import POSITIVE_TYPES, EventType, Impression, Interaction


@dataclass(frozen=True)
class AttributionConfig:
    window_ms: int = 30 * 60 * 1000
    allowed_lateness_ms: int = 60_000
    segment_keys: tuple[str, ...] = DEFAULT_SEGMENT_KEYS

    def __post_init__(self) -> None:
        if self.window_ms <= 0 or self.allowed_lateness_ms < 0:
            raise ValueError("window_ms must be > 0 and allowed_lateness_ms >= 0")


class Input(StrEnum):
    """The join's inputs, each with its own watermark."""

    IMPRESSIONS = "impressions"  # ``<ns>.impressions``: events.Impression
    EVENTS = "events"  # ``<ns>.events``: events.Interaction


@dataclass(frozen=True)
class WatermarkTick:
    """Advances an input's event-time clock without carrying data (idle inputs); ``input=None``
    advances every input."""

    event_ms: int
    input: Input | None = None


@dataclass(frozen=True)
class Rejected:
    reason: str  # "late" | "duplicate"
    event_key: str
    event_ms: int


@dataclass
class _Pending:
    request_id: str
    user_id: str
    item_id: str
    impression_ms: int
    segment: str
    position: int
    propensity: float
    positive: bool = False
    arm: str = ""  # the slate's experiment arm (``Impression.experiment_arm``)
    source: str = ""  # the slot's candidate source


@dataclass(frozen=True)
class _Reward:
    user_id: str
    item_id: str
    request_id: str | None
    event_ms: int
    dismiss: bool


@dataclass(frozen=True, slots=True)
class AttributionDelta:
    """What changed in one partition's state since its last delta (:meth:`AttributionState.delta`).

    A store writes it in place of the whole state, so a batch's write costs what the batch
    changed, not what the state holds (``streams.statestore``). ``pending``, ``rewards`` and
    ``seen`` map each changed entry to its new value in :meth:`AttributionState.to_dict`'s form,
    or to None where it was removed; ``whole``: the maps hold the entire state, and whatever is
    stored is replaced (the first delta of a state built from a snapshot or from nothing).
    ``version`` names the stored state this delta leads to (``streams.bandit_steps.LiveAttribution``).
    """

    version: str
    watermarks: dict[str, int]
    pending: dict[tuple[str, str], dict[str, Any] | None]
    rewards: dict[str, dict[str, Any] | None]
    seen: dict[str, int | None]
    whole: bool
    # Always whole, as the watermarks: how many outcomes the partition has numbered, and the
    # last batch's outcomes (``AttributionState.stamp``).
    serial: int = 0
    outbox: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True)
class _Changes:
    """Keys touched since a state's last delta (``AttributionState._changed``)."""

    pending: set[tuple[str, str]] = field(default_factory=set)
    rewards: set[str] = field(default_factory=set)
    seen: set[str] = field(default_factory=set)


@dataclass
class AttributionState:
    """Everything one partition needs; serialisable with :meth:`to_dict` (snapshot) and, since
    its last delta, :meth:`delta` (what a batch changed).

    The underscored indexes and expiry heaps are derived data (rebuilt by :meth:`from_dict`);
    they keep every event O(log n) instead of a scan over the whole state. ``_changed`` holds
    the keys of ``pending``, ``rewards`` and ``seen`` touched since the last delta; until the
    first delta (``_whole``) every key is in it.
    """

    watermarks: dict[Input, int] = field(default_factory=dict)  # absent: nothing seen there yet
    pending: dict[tuple[str, str], _Pending] = field(default_factory=dict)
    rewards: dict[str, _Reward] = field(default_factory=dict)  # buffered, by event_id
    seen: dict[str, int] = field(default_factory=dict)  # de-dup id -> event time
    # (user, item) -> keys of that user's pending slots showing that item: the only ones an
    # event without a request id can reward (``_in_window``).
    _pending_by_user_item: dict[tuple[str, str], set[tuple[str, str]]] = field(
        default_factory=dict, repr=False
    )
    _rewards_by_item: dict[str, set[str]] = field(default_factory=dict, repr=False)
    _pending_due: list[tuple[int, str, str]] = field(default_factory=list, repr=False)
    _reward_expiry: list[tuple[int, str]] = field(default_factory=list, repr=False)
    _seen_expiry: dict[Input, list[tuple[int, str]]] = field(default_factory=dict, repr=False)
    # The outbox: the outcomes the last batch decided, numbered (``stamp``), committed with the
    # state and produced after the commit; a worker that rebuilds the state from the store
    # produces them again (it cannot know whether they went out), and the posteriors skip them
    # by number. ``serial``: the outcomes numbered so far.
    serial: int = 0
    outbox: list[Outcome] = field(default_factory=list)
    _changed: _Changes = field(default_factory=_Changes, repr=False)
    _whole: bool = field(default=True, repr=False)  # no delta yet: the next one is the whole

    def horizon(self, source: Input, config: AttributionConfig) -> int | None:
        """``watermark − allowed_lateness`` of one input: no event of that input older than this
        will ever be applied."""
        watermark = self.watermarks.get(source)
        if watermark is None:
            return None
        return watermark - config.allowed_lateness_ms

    def advance_watermark(self, source: Input, event_ms: int) -> None:
        watermark = self.watermarks.get(source)
        self.watermarks[source] = event_ms if watermark is None else max(watermark, event_ms)

    # -- mutation helpers that keep the indexes in step ------------------------------------
    def put_pending(self, p: _Pending, window_ms: int) -> None:
        key = (p.request_id, p.item_id)
        self.pending[key] = p
        self._changed.pending.add(key)
        self._pending_by_user_item.setdefault((p.user_id, p.item_id), set()).add(key)
        heapq.heappush(self._pending_due, (p.impression_ms + window_ms, *key))

    def drop_pending(self, key: tuple[str, str]) -> _Pending | None:
        p = self.pending.pop(key, None)
        if p is not None:
            self._changed.pending.add(key)
            keys = self._pending_by_user_item[p.user_id, p.item_id]
            keys.discard(key)
            if not keys:
                del self._pending_by_user_item[p.user_id, p.item_id]
        return p

    def mark_positive(self, key: tuple[str, str]) -> None:
        self.pending[key].positive = True
        self._changed.pending.add(key)

    def pending_of(self, user_id: str, item_id: str) -> list[tuple[str, str]]:
        """Keys of the user's pending slots that show the item, in key order."""
        keys = self._pending_by_user_item.get((user_id, item_id))
        return sorted(keys) if keys else []

    def put_reward(self, event_id: str, r: _Reward) -> None:
        self.rewards[event_id] = r
        self._changed.rewards.add(event_id)
        self._rewards_by_item.setdefault(r.item_id, set()).add(event_id)
        heapq.heappush(self._reward_expiry, (r.event_ms, event_id))

    def rewards_for_item(self, item_id: str) -> list[_Reward]:
        return [self.rewards[e] for e in sorted(self._rewards_by_item.get(item_id, ()))]

    def mark_seen(self, key: str, event_ms: int) -> None:
        self.seen[key] = event_ms
        self._changed.seen.add(key)
        heapq.heappush(self._seen_expiry.setdefault(_seen_input(key), []), (event_ms, key))

    def pop_due(self, horizon: int) -> list[_Pending]:
        """Pending slots whose window closed at or before ``horizon``, oldest first."""
        due = []
        while self._pending_due and self._pending_due[0][0] <= horizon:
            _, request_id, item_id = heapq.heappop(self._pending_due)
            p = self.drop_pending((request_id, item_id))
            if p is not None:  # None: already decided by a dismiss
                due.append(p)
        return due

    def forget_rewards_before(self, horizon: int) -> None:
        while self._reward_expiry and self._reward_expiry[0][0] < horizon:
            _, event_id = heapq.heappop(self._reward_expiry)
            r = self.rewards.pop(event_id)
            self._changed.rewards.add(event_id)
            ids = self._rewards_by_item[r.item_id]
            ids.discard(event_id)
            if not ids:
                del self._rewards_by_item[r.item_id]

    def forget_seen_before(self, source: Input, horizon: int) -> None:
        expiry = self._seen_expiry.get(source, [])
        while expiry and expiry[0][0] < horizon:
            _, key = heapq.heappop(expiry)
            del self.seen[key]
            self._changed.seen.add(key)

    # -- snapshot ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "watermarks": {str(source): w for source, w in sorted(self.watermarks.items())},
            # copies: a pending slot changes later (``positive``), a snapshot must not with it
            "pending": [dict(vars(p)) for _, p in sorted(self.pending.items())],
            "rewards": {k: vars(r) for k, r in sorted(self.rewards.items())},
            "seen": dict(sorted(self.seen.items())),
            "serial": self.serial,
            "outbox": [_fields(o) for o in self.outbox],
        }

    def stamp(self, outcomes: list[Outcome], origin: int) -> list[Outcome]:
        """``outcomes`` (this batch's, in decision order) numbered in partition ``origin``'s
        sequence; they become the outbox, replacing the last batch's (produced by now)."""
        self.outbox = [
            replace(o, origin=origin, serial=self.serial + n) for n, o in enumerate(outcomes)
        ]
        self.serial += len(self.outbox)
        return self.outbox

    def delta(self, version: str) -> AttributionDelta:
        """The changes since the last delta (all of the state on the first), leading to the
        stored state ``version``; the next delta starts from here."""
        watermarks = {str(source): w for source, w in sorted(self.watermarks.items())}
        keys = (
            _Changes(set(self.pending), set(self.rewards), set(self.seen))
            if self._whole
            else self._changed
        )
        delta = AttributionDelta(
            version,
            watermarks,
            {
                k: None if (p := self.pending.get(k)) is None else dict(vars(p))
                for k in keys.pending
            },
            {k: None if (r := self.rewards.get(k)) is None else vars(r) for k in keys.rewards},
            {k: self.seen.get(k) for k in keys.seen},
            whole=self._whole,
            serial=self.serial,
            outbox=[_fields(o) for o in self.outbox],
        )
        self._changed, self._whole = _Changes(), False
        return delta

    @classmethod
    def from_dict(cls, data: dict[str, Any], config: AttributionConfig) -> AttributionState:
        state = cls(
            watermarks=snapshot_watermarks(data),
            serial=int(data.get("serial", 0)),
            outbox=[Outcome(**o) for o in data.get("outbox", [])],
        )
        for p in data["pending"]:
            state.put_pending(_Pending(**p), config.window_ms)
        for k, r in data["rewards"].items():
            state.put_reward(k, _Reward(**r))
        for k, t in data["seen"].items():
            state.mark_seen(k, int(t))
        return state


def _fields(outcome: Outcome) -> dict[str, Any]:
    """The outcome as a dict: ``dataclasses.asdict`` without its recursive deep copy, which
    every field, a scalar, does not need (the outbox is written with every batch's delta)."""
    return dict(vars(outcome))


def apply_delta(data: dict[str, Any] | None, delta: AttributionDelta) -> dict[str, Any]:
    """The :meth:`AttributionState.to_dict` snapshot ``data`` (None: nothing stored) after
    ``delta``: what a store that keeps whole snapshots holds once it has written the delta."""
    if delta.whole or data is None:
        pending: dict[tuple[str, str], dict[str, Any] | None] = {}
        rewards: dict[str, dict[str, Any] | None] = {}
        seen: dict[str, int | None] = {}
    else:
        pending = {(p["request_id"], p["item_id"]): p for p in data["pending"]}
        rewards = dict(data["rewards"])
        seen = dict(data["seen"])
    pending.update(delta.pending)
    rewards.update(delta.rewards)
    seen.update(delta.seen)
    return {
        "watermarks": dict(delta.watermarks),
        "pending": [dict(p) for _, p in sorted(pending.items()) if p is not None],
        "rewards": {k: dict(r) for k, r in sorted(rewards.items()) if r is not None},
        "seen": {k: t for k, t in sorted(seen.items()) if t is not None},
        "serial": delta.serial,
        "outbox": [dict(o) for o in delta.outbox],
    }


def snapshot_watermarks(data: dict[str, Any]) -> dict[Input, int]:
    """The input watermarks of a :meth:`AttributionState.to_dict` snapshot, without the rest."""
    if "watermarks" in data:
        return {Input(source): int(w) for source, w in data["watermarks"].items()}
    old = data["watermark_ms"]  # a snapshot from before issue 21: one watermark held both back
    return {} if old is None else dict.fromkeys(Input, int(old))


Output = Outcome | Rejected
Event = Impression | Interaction | WatermarkTick


def _seen_input(key: str) -> Input:
    """The input of a de-duplication id: ``r:<request_id>`` or ``e:<event_id>``."""
    return Input.IMPRESSIONS if key.startswith("r:") else Input.EVENTS


def _in_window(pending: _Pending, reward: _Reward, config: AttributionConfig) -> bool:
    if reward.item_id != pending.item_id:
        return False
    if reward.request_id is not None:
        if reward.request_id != pending.request_id:
            return False
    elif reward.user_id != pending.user_id:
        return False
    return pending.impression_ms <= reward.event_ms < pending.impression_ms + config.window_ms


def _outcome(p: _Pending, success: bool, reason: str) -> Outcome:
    return Outcome(
        outcome_id=f"{p.request_id}|{p.item_id}",
        item_id=p.item_id,
        segment=p.segment,
        impression_ms=p.impression_ms,
        success=success,
        reason=reason,
        position=p.position,
        propensity=p.propensity,
        arm=p.arm,
        source=p.source,
    )


def attribute(
    state: AttributionState, event: Event, config: AttributionConfig
) -> tuple[AttributionState, list[Output]]:
    """Apply one event; mutates and returns ``state`` with the outputs it caused."""
    if isinstance(event, WatermarkTick):
        for source in Input if event.input is None else (event.input,):
            state.advance_watermark(source, event.event_ms)
        return state, _advance(state, config)
    event_ms = event.event_time_ms
    source = Input.IMPRESSIONS if isinstance(event, Impression) else Input.EVENTS
    horizon = state.horizon(source, config)
    outputs: list[Output] = []
    if horizon is not None and event_ms < horizon:
        key = event.request_id if isinstance(event, Impression) else event.event_id
        return state, [Rejected("late", key, event_ms)]
    if isinstance(event, Impression):
        if ("r:" + event.request_id) in state.seen:
            return state, [Rejected("duplicate", event.request_id, event_ms)]
        state.mark_seen("r:" + event.request_id, event_ms)
        outputs.extend(_add_impression(state, event, config))
    elif event.event_type in POSITIVE_TYPES or event.event_type == EventType.DISMISS:
        if ("e:" + event.event_id) in state.seen:
            return state, [Rejected("duplicate", event.event_id, event_ms)]
        state.mark_seen("e:" + event.event_id, event_ms)
        outputs.extend(_add_reward(state, event, config))
    state.advance_watermark(source, event_ms)
    outputs.extend(_advance(state, config))
    return state, outputs


def _add_impression(
    state: AttributionState, impression: Impression, config: AttributionConfig
) -> list[Output]:
    segment = segment_of(impression.context, config.segment_keys)
    outputs: list[Output] = []
    placed: set[str] = set()
    for slot in impression.items:
        if slot.item_id in placed:  # same item twice in one slate: the first slot counts
            continue
        placed.add(slot.item_id)
        pending = _Pending(
            request_id=impression.request_id,
            user_id=impression.user_id,
            item_id=slot.item_id,
            impression_ms=impression.event_time_ms,
            segment=segment,
            position=slot.position,
            propensity=slot.propensity,
            arm=impression.experiment_arm,
            source=slot.source,
        )
        matched = [
            r for r in state.rewards_for_item(slot.item_id) if _in_window(pending, r, config)
        ]
        if any(r.dismiss for r in matched):
            outputs.append(_outcome(pending, False, "dismiss"))
            continue
        pending.positive = bool(matched)
        state.put_pending(pending, config.window_ms)
    return outputs


def _add_reward(
    state: AttributionState, event: Interaction, config: AttributionConfig
) -> list[Output]:
    reward = _Reward(
        user_id=event.user_id,
        item_id=event.item_id,
        request_id=event.request_id,
        event_ms=event.event_time_ms,
        dismiss=event.event_type == EventType.DISMISS,
    )
    state.put_reward(event.event_id, reward)
    if reward.request_id is not None:
        candidates: Iterable[tuple[str, str]] = [(reward.request_id, reward.item_id)]
    else:
        candidates = state.pending_of(reward.user_id, reward.item_id)
    outputs: list[Output] = []
    for key in candidates:
        pending = state.pending.get(key)
        if pending is None or not _in_window(pending, reward, config):
            continue
        if reward.dismiss:
            state.drop_pending(key)
            outputs.append(_outcome(pending, False, "dismiss"))
        else:
            state.mark_positive(key)
    return outputs


def _advance(state: AttributionState, config: AttributionConfig) -> list[Output]:
    """Decide every impression whose window the events watermark has passed; prune what can't
    matter any more, each by the watermark of the input that could still need it."""
    outputs: list[Output] = []
    events_horizon = state.horizon(Input.EVENTS, config)
    if events_horizon is not None:
        for p in state.pop_due(events_horizon):
            outputs.append(_outcome(p, p.positive, "positive" if p.positive else "no_reward"))
        state.forget_seen_before(Input.EVENTS, events_horizon)
    impressions_horizon = state.horizon(Input.IMPRESSIONS, config)
    if impressions_horizon is not None:
        # A buffered reward before it can't meet a future (non-late) impression, and a
        # re-delivered id before its input's horizon is rejected as late before de-duplication.
        state.forget_rewards_before(impressions_horizon)
        state.forget_seen_before(Input.IMPRESSIONS, impressions_horizon)
    return outputs


def replay(
    events: Iterable[Event], config: AttributionConfig
) -> tuple[AttributionState, list[Output]]:
    """Run ``events`` through a fresh state (the testing harness and offline back-fills use it)."""
    state = AttributionState()
    outputs: list[Output] = []
    for event in events:
        state, out = attribute(state, event, config)
        outputs.extend(out)
    return state, outputs
