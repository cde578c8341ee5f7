"""Logged slates joined with their attributed outcomes: what an experiment read-out counts. Pure.

One :class:`SlateRecord` per served slate (``events.Impression``), with the positions that got an
attributed click or dismissal. Attribution is the system's own rule, decided in event time
(``bandits.impression_ope.attributed_outcomes`` → ``bandits.attribution``): a click or dismiss
carrying ``request_id`` joins that slate only, inside the attribution window; one without joins
the user's slates that showed the item. The unit counted is one shown (request, item) slot, as in
the worker's metrics (docs/metrics.md): an item shown twice in one slate counts once.

Formats read from the impression, all written by ``serving`` (contract-tested against it in
``tests/unit/evaluation/test_experiment_log.py``):

* ``experiment_arm``: ``"<experiment>=<arm>,<experiment>=<arm>"`` (``Assignment.label``);
* context ``experiment.<name>`` present: that experiment's arm was forced by an override, so the
  slate is not randomised for it (``serving.experiments.OVERRIDE_PREFIX``);
* context ``interleaving.teams``: one character per position, ``A``/``B`` for the team that
  placed the slot, ``-`` for none (``serving.interleaving.encode_teams``); ``model_version``
  ``interleaved(<A>,<B>)`` names the two rankers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from bandits.attribution import AttributionConfig
from bandits.impression_ope import attributed_outcomes
from bandits.posterior import Outcome
from events.models import POSITIVE_TYPES, EventType, Impression, Interaction

OVERRIDE_PREFIX = "experiment."
TEAMS_CONTEXT_KEY = "interleaving.teams"
_INTERLEAVED_VERSION = re.compile(r"^interleaved\((?P<a>.*),(?P<b>[^,]*)\)$")
_REWARD_TYPES = frozenset({*POSITIVE_TYPES, EventType.DISMISS})


@dataclass(frozen=True)
class SlateRecord:
    request_id: str
    user_id: str
    event_time_ms: int
    arms: Mapping[str, str]  # experiment -> arm
    forced: frozenset[str]  # experiments whose arm this request forced by override
    items: tuple[str, ...]  # the counted slots' items (first occurrence of each), by position
    positions: tuple[int, ...]  # their positions in the slate
    clicked: frozenset[int]  # positions with an attributed click
    dismissed: frozenset[int]  # positions with an attributed dismissal
    teams: tuple[str | None, ...] | None  # interleaved slates: the team of each position
    model_version: str

    @property
    def slots(self) -> int:
        return len(self.items)


def parse_arms(label: str) -> dict[str, str]:
    """``"ranker=sasrec,diversity=control"`` → ``{"ranker": "sasrec", "diversity": "control"}``."""
    arms: dict[str, str] = {}
    for part in label.split(","):
        experiment, sep, arm = part.partition("=")
        if sep and experiment and arm:
            arms[experiment] = arm
    return arms


def forced_experiments(context: Mapping[str, str]) -> frozenset[str]:
    return frozenset(
        key[len(OVERRIDE_PREFIX) :] for key in context if key.startswith(OVERRIDE_PREFIX)
    )


def decode_teams(value: str) -> tuple[str | None, ...] | None:
    """``"AB-"`` → ``("A", "B", None)``; ``None`` for a malformed string (nothing credited)."""
    if any(char not in "AB-" for char in value):
        return None
    return tuple(None if char == "-" else char for char in value)


def interleaved_rankers(model_version: str) -> tuple[str, str] | None:
    """``"interleaved(v1,retrieval-only)"`` → ``("v1", "retrieval-only")``."""
    match = _INTERLEAVED_VERSION.match(model_version)
    return (match["a"], match["b"]) if match else None


def reward_events(interactions: Iterable[Interaction], users: set[str]) -> list[Interaction]:
    """The events attribution can use: clicks, purchases, add-to-carts and dismissals of users
    who were shown something. Leaving out the rest changes no outcome (the log is replayed in
    event-time order, so no event is late) and keeps the replay small."""
    return [e for e in interactions if e.event_type in _REWARD_TYPES and e.user_id in users]


def slate_records(
    impressions: Iterable[Impression],
    interactions: Iterable[Interaction],
    config: AttributionConfig,
) -> list[SlateRecord]:
    """One record per distinct ``request_id`` (a redelivered impression counts once), in
    event-time order, with its slots' attributed outcomes."""
    unique: dict[str, Impression] = {}
    for impression in sorted(impressions, key=lambda i: (i.event_time_ms, i.request_id)):
        unique.setdefault(impression.request_id, impression)
    users = {impression.user_id for impression in unique.values()}
    outcomes = attributed_outcomes(unique.values(), reward_events(interactions, users), config)
    return [_record(impression, outcomes) for impression in unique.values()]


def _record(impression: Impression, outcomes: Mapping[str, Outcome]) -> SlateRecord:
    items: list[str] = []
    positions: list[int] = []
    clicked: set[int] = set()
    dismissed: set[int] = set()
    for slot in impression.items:
        if slot.item_id in items:  # attribution counts an item's first slot only
            continue
        items.append(slot.item_id)
        positions.append(slot.position)
        outcome = outcomes.get(f"{impression.request_id}|{slot.item_id}")
        if outcome is None:
            continue
        if outcome.success:
            clicked.add(slot.position)
        elif outcome.reason == "dismiss":
            dismissed.add(slot.position)
    raw_teams = impression.context.get(TEAMS_CONTEXT_KEY)
    return SlateRecord(
        request_id=impression.request_id,
        user_id=impression.user_id,
        event_time_ms=impression.event_time_ms,
        arms=parse_arms(impression.experiment_arm),
        forced=forced_experiments(impression.context),
        items=tuple(items),
        positions=tuple(positions),
        clicked=frozenset(clicked),
        dismissed=frozenset(dismissed),
        teams=decode_teams(raw_teams) if raw_teams is not None else None,
        model_version=impression.model_version,
    )


def experiments_in(records: Sequence[SlateRecord]) -> list[str]:
    """Every experiment named in the records, in first-seen order."""
    seen: dict[str, None] = {}
    for record in records:
        for experiment in record.arms:
            seen.setdefault(experiment)
    return list(seen)
