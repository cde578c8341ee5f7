"""Team-draft interleaving: hand-worked draws, credit, and the invariants of the merge."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.interleaving import Interleaved, credit, preference, seed_for, team_draft, winner


def coin_flips(seed: int, n: int) -> list[bool]:
    """The first ``n`` coin results ``team_draft`` sees with ``seed`` (True = A picks)."""
    rng = random.Random(seed)
    return [rng.random() < 0.5 for _ in range(n)]


def test_hand_worked_draft_follows_the_coin():
    a, b = ["1", "2", "3", "4"], ["2", "5", "1", "6"]
    # Find seeds whose first coin goes each way and work the rest out by hand.
    seed_a_first = next(s for s in range(100) if coin_flips(s, 1)[0])
    seed_b_first = next(s for s in range(100) if not coin_flips(s, 1)[0])
    # A first: A takes 1; B (fewer picks) takes 2; tie → coin #2 decides round 3.
    merged = team_draft(a, b, 2, seed=seed_a_first)
    assert merged == Interleaved(("1", "2"), ("A", "B"))
    # B first: B takes 2; A takes 1 (its best untaken); then a new round.
    merged = team_draft(a, b, 2, seed=seed_b_first)
    assert merged == Interleaved(("2", "1"), ("B", "A"))


def test_hand_worked_four_slots():
    a, b = ["1", "2", "3", "4"], ["2", "5", "1", "6"]
    # The coin is tossed only when both teams have picked equally often: before slots 0 and 2.
    seed_aa = next(s for s in range(1000) if coin_flips(s, 2) == [True, True])
    seed_ab = next(s for s in range(1000) if coin_flips(s, 2) == [True, False])
    # Round 1: A takes 1, B takes 2. Round 2, A first: A takes 3 (2 is taken), B takes 5.
    assert team_draft(a, b, 4, seed=seed_aa) == Interleaved(
        ("1", "2", "3", "5"), ("A", "B", "A", "B")
    )
    # Round 2, B first: B takes 5, then A takes 3.
    assert team_draft(a, b, 4, seed=seed_ab) == Interleaved(
        ("1", "2", "5", "3"), ("A", "B", "B", "A")
    )


def test_identical_rankings_give_the_same_list():
    ranking = ["x", "y", "z"]
    assert team_draft(ranking, ranking, 3, seed=7).items == ("x", "y", "z")


def test_when_one_team_runs_out_the_other_fills_the_slate():
    merged = team_draft(["a"], ["b", "c", "d"], 4, seed=1)
    assert sorted(merged.items) == ["a", "b", "c", "d"]
    assert merged.teams.count("A") == 1
    assert team_draft([], [], 3, seed=1) == Interleaved((), ())


def test_the_same_request_id_gives_the_same_merge():
    a, b = [str(n) for n in range(20)], [str(n) for n in reversed(range(20))]
    assert team_draft(a, b, 10, seed=seed_for("req-9")) == team_draft(
        a, b, 10, seed=seed_for("req-9")
    )
    assert seed_for("req-9") == int.from_bytes(
        __import__("hashlib").sha256(b"req-9").digest()[:8], "big"
    )


def test_credit_and_winner():
    merged = Interleaved(("p", "q", "r", "s"), ("A", "B", "B", "A"))
    assert credit(merged, [1, 2, 2, 9]) == {"A": 0, "B": 2}  # repeats once, out of range ignored
    assert winner(merged, [0, 1, 2]) == "B"
    assert winner(merged, [0, 3]) == "A"
    assert winner(merged, [0, 1]) == "tie"
    assert winner(merged, []) == "tie"


def test_preference_aggregates_outcomes():
    assert preference(["A", "A", "B", "tie"]) == pytest.approx(0.25)
    assert preference([]) == 0.0


def test_negative_k_is_rejected():
    with pytest.raises(ValueError):
        team_draft(["a"], ["b"], -1, seed=0)


rankings = st.lists(st.sampled_from("abcdefghijkl"), unique=True, max_size=12)


@settings(max_examples=100, deadline=None)
@given(a=rankings, b=rankings, k=st.integers(0, 15), seed=st.integers(0, 2**64 - 1))
def test_every_item_comes_from_a_team_that_ranked_it_without_duplicates(a, b, k, seed):
    merged = team_draft(a, b, k, seed=seed)
    assert len(merged.items) == len(merged.teams) == min(k, len(set(a) | set(b)))
    assert len(set(merged.items)) == len(merged.items)
    for item, team in zip(merged.items, merged.teams, strict=True):
        assert item in (a if team == "A" else b)


@settings(max_examples=100, deadline=None)
@given(
    ranking=st.permutations(list("abcdefghij")),
    other_seed=st.integers(0, 1000),
    k=st.integers(0, 10),
    seed=st.integers(0, 2**32),
)
def test_team_sizes_differ_by_at_most_one_in_every_prefix(ranking, other_seed, k, seed):
    other = list(ranking)
    random.Random(other_seed).shuffle(other)  # same items, so neither team runs out early
    merged = team_draft(ranking, other, k, seed=seed)
    for end in range(len(merged.teams) + 1):
        prefix = merged.teams[:end]
        assert abs(prefix.count("A") - prefix.count("B")) <= 1


@settings(max_examples=50, deadline=None)
@given(a=rankings, b=rankings, k=st.integers(1, 12), seed=st.integers(0, 2**32))
def test_each_team_picks_its_best_untaken_item(a, b, k, seed):
    merged = team_draft(a, b, k, seed=seed)
    for slot, (item, team) in enumerate(zip(merged.items, merged.teams, strict=True)):
        own = a if team == "A" else b
        taken = set(merged.items[:slot])
        assert item == next(i for i in own if i not in taken)


def test_the_docstring_examples_run():
    import doctest

    import serving.interleaving

    result = doctest.testmod(serving.interleaving)
    assert result.attempted > 0 and result.failed == 0


def test_team_strings_round_trip_and_credit_only_placed_slots():
    from serving.interleaving import credit_logged, decode_teams, encode_teams

    assert encode_teams(["A", "B", "", "A"]) == "AB-A"
    assert decode_teams("AB-A") == ("A", "B", None, "A")
    assert credit_logged("AB-A", [0, 2, 3, 3, 9]) == {"A": 2, "B": 0}
    with pytest.raises(ValueError):
        encode_teams(["C"])
    with pytest.raises(ValueError):
        decode_teams("AX")
