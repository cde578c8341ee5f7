"""Team-draft interleaving of two rankings, and click credit. Pure and seeded.

Team-draft (Radlinski, Kurup & Joachims, 2008): the two rankers act as captains picking players.
In each round the team with fewer picks so far picks next (a coin flip breaks a tie); a team picks
its best-ranked item not yet in the merged list. When one team has nothing left to add, the other
keeps picking. Each slot remembers which team contributed it; a click credits that team, and the
team with more credited clicks wins the impression.

The coin is a ``random.Random`` seeded per request (``seed_for(request_id)``, SHA-256, stable
across processes), so the same request id always gives the same merged list.

Example::

    >>> merged = team_draft(["a", "b", "c"], ["b", "d", "a"], k=4, seed=seed_for("req-1"))
    >>> sorted(merged.items) == sorted(set(merged.items))
    True
    >>> winner(merged, clicked_positions=[i for i, t in enumerate(merged.teams) if t == "A"])
    'A'
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

Team = Literal["A", "B"]
Outcome = Literal["A", "B", "tie"]


@dataclass(frozen=True, slots=True)
class Interleaved:
    """The merged list, and for each slot the team (ranker) that contributed it."""

    items: tuple[str, ...]
    teams: tuple[Team, ...]


def seed_for(request_id: str) -> int:
    """A 64-bit seed derived from the request id, the same in every process."""
    return int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:8], "big")


def team_draft(
    ranking_a: Sequence[str], ranking_b: Sequence[str], k: int, *, seed: int
) -> Interleaved:
    """Merge two rankings (best first, no duplicates inside each) into at most ``k`` slots."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    coin = random.Random(seed)
    taken: set[str] = set()
    items: list[str] = []
    teams: list[Team] = []
    next_a = next_b = 0  # cursors: everything before them is already taken
    picks = {"A": 0, "B": 0}
    while len(items) < k:
        while next_a < len(ranking_a) and ranking_a[next_a] in taken:
            next_a += 1
        while next_b < len(ranking_b) and ranking_b[next_b] in taken:
            next_b += 1
        a_left, b_left = next_a < len(ranking_a), next_b < len(ranking_b)
        if not a_left and not b_left:
            break
        if a_left and b_left:
            a_turn = picks["A"] < picks["B"] or (picks["A"] == picks["B"] and coin.random() < 0.5)
        else:
            a_turn = a_left
        team: Team = "A" if a_turn else "B"
        item = ranking_a[next_a] if a_turn else ranking_b[next_b]
        taken.add(item)
        items.append(item)
        teams.append(team)
        picks[team] += 1
    return Interleaved(tuple(items), tuple(teams))


# In serving: an interleaving arm (``serving.experiments.ArmParams.interleave``) puts each slot's
# team in the response (``RecommendedItem.team``) and in the impression's context under this key,
# one character per position: "A", "B", or "-" for a slot neither ranker placed (pins,
# exploration). The impression schema has no per-item team field, hence the context.
INTERLEAVING_CONTEXT_KEY = "interleaving.teams"


def encode_teams(teams: Sequence[str]) -> str:
    """``["A", "B", ""]`` → ``"AB-"`` (the impression context value)."""
    if any(team not in ("A", "B", "") for team in teams):
        raise ValueError(f"teams are 'A', 'B' or '', got {list(teams)}")
    return "".join(team or "-" for team in teams)


def decode_teams(value: str) -> tuple[Team | None, ...]:
    """The inverse of ``encode_teams`` (``None`` for an uncredited slot)."""
    decoded: list[Team | None] = []
    for char in value:
        if char == "A":
            decoded.append("A")
        elif char == "B":
            decoded.append("B")
        elif char == "-":
            decoded.append(None)
        else:
            raise ValueError(f"not an interleaving team string: {value!r}")
    return tuple(decoded)


def credit_logged(teams: str, clicked_positions: Iterable[int]) -> dict[Team, int]:
    """``credit`` from a logged impression's team string; uncredited slots count for nobody."""
    slots = decode_teams(teams)
    counts: dict[Team, int] = {"A": 0, "B": 0}
    for position in set(clicked_positions):
        if 0 <= position < len(slots) and (team := slots[position]) is not None:
            counts[team] += 1
    return counts


def credit(interleaved: Interleaved, clicked_positions: Iterable[int]) -> dict[Team, int]:
    """Clicks credited to each team; positions outside the list are ignored, repeats count once."""
    counts: dict[Team, int] = {"A": 0, "B": 0}
    for position in set(clicked_positions):
        if 0 <= position < len(interleaved.teams):
            counts[interleaved.teams[position]] += 1
    return counts


def winner(interleaved: Interleaved, clicked_positions: Iterable[int]) -> Outcome:
    """``"A"`` or ``"B"`` if that team got more clicks, otherwise (no clicks included) ``"tie"``."""
    counts = credit(interleaved, clicked_positions)
    if counts["A"] > counts["B"]:
        return "A"
    if counts["B"] > counts["A"]:
        return "B"
    return "tie"


def preference(outcomes: Iterable[Outcome]) -> float:
    """Aggregate over impressions: ``(wins_A - wins_B) / (wins_A + wins_B + ties)`` in [-1, 1].

    Positive favours A. Impressions without any click should be left out by the caller.
    """
    wins_a = wins_b = ties = 0
    for outcome in outcomes:
        if outcome == "A":
            wins_a += 1
        elif outcome == "B":
            wins_b += 1
        else:
            ties += 1
    total = wins_a + wins_b + ties
    return (wins_a - wins_b) / total if total else 0.0
