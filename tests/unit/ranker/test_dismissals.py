"""Dismissals in training: where each lands in the tensors, the unlikelihood term, and that a
ranker trained with them ranks the dismissed items lower."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from ranker_synthetic import synthetic_items, synthetic_ratings, write_movielens_small_layout

from aether.cli import build_parser
from interactions.dismissals import with_dismissals
from interactions.sequences import Split
from ranker.checkpoint import history_keeps_dismissed, load_checkpoint
from ranker.data import ItemVocabulary, build_training_tensors
from ranker.dismissals import batch_unlikelihood, dismissal_targets, unlikelihood_loss
from ranker.train import TrainConfig, score_all_items, train_sasrec


@pytest.fixture
def one_torch_thread():
    """A tiny model trains faster on one thread than on contended cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def ratings(rows):
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating"])


def test_low_ratings_leave_the_sequences_and_become_dismissals_with_their_position():
    split = Split("loo", {"u1": ["a", "x", "b", "y", "c"], "u2": ["z", "a"]}, [], [], ())
    frame = ratings(
        [
            ("u1", "a", 5),
            ("u1", "x", 2),
            ("u1", "b", 4),
            ("u1", "y", 1),
            ("u1", "c", 3),
            ("u2", "z", 2.5),
            ("u2", "a", 1),
        ]
    )
    out = with_dismissals(split, frame)
    assert out.train == {"u1": ["a", "b", "c"], "u2": ["z"]}
    assert out.train_dismissals == {"u1": ((1, "x"), (2, "y")), "u2": ((1, "a"),)}
    assert out.validation == split.validation and out.test == split.test


def test_each_dismissal_is_ranked_by_the_state_after_the_last_item_before_it():
    sequences = {"u1": ["a", "b", "c", "d", "e", "f"], "u2": ["a"], "u3": ["b", "c"]}
    dismissals = {
        "u1": [(0, "x"), (2, "x"), (5, "y"), (6, "y")],  # before any item; after b; after e; end
        "u2": [(1, "x")],  # one item only: no training row
        "u3": [(1, "never-seen")],
    }
    vocab = ItemVocabulary.from_sequences([*sequences.values(), ["x", "y"]])
    max_length = 4  # u1's inputs a..e keep only b..e
    tensors = build_training_tensors(sequences, vocab, max_length)
    targets = dismissal_targets(sequences, dismissals, vocab, max_length)
    # (2, x): the state after b, which is input column 0 (b, c, d, e); (5, y): after e, column 3.
    # (0, x) has no state; (6, y) comes after the last input; u3's item is unknown.
    assert targets.rows.tolist() == [0, 0] and targets.columns.tolist() == [0, 3]
    assert [vocab.item_ids[i - 1] for i in targets.items] == ["x", "y"]
    assert [vocab.item_ids[tensors.inputs[0, c] - 1] for c in targets.columns] == ["b", "e"]
    batch_pos, columns, _ = targets.in_batch(np.array([1, 0]))  # rows in shuffled order
    assert batch_pos.tolist() == [1, 1] and columns.tolist() == [0, 3]
    assert targets.in_batch(np.array([1]))[0].size == 0


def test_unlikelihood_is_minus_log_one_minus_the_softmax_probability():
    hidden = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    items = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    dismissed = torch.tensor([2, 0])
    probs = torch.softmax(hidden @ items.T, dim=1)
    expected = -(torch.log(1 - probs[0, 2]) + torch.log(1 - probs[1, 0])) / 2
    assert math.isclose(
        unlikelihood_loss(hidden, items, dismissed).item(), expected.item(), rel_tol=1e-6
    )
    # a certain item gives a large but finite loss
    assert math.isfinite(
        unlikelihood_loss(torch.tensor([[50.0, 0.0]]), items[:2], torch.tensor([0])).item()
    )


def test_the_gradient_pushes_the_dismissed_logit_down():
    hidden = torch.zeros(1, 2, 2, requires_grad=True)
    items = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    targets = dismissal_targets(
        {"u": ["a", "b", "c"]}, {"u": [(1, "b")]}, ItemVocabulary(("a", "b")), 2
    )
    loss = batch_unlikelihood(hidden, items, targets, np.array([0]))
    assert loss is not None
    loss.backward()
    # moving the state along item b's vector raises b's logit: the gradient must point against it
    assert (hidden.grad[0, targets.columns[0]] @ items[1]).item() > 0


def test_training_with_dismissals_ranks_the_dismissed_items_lower(one_torch_thread):
    # After item "a", users take "b" or "c" equally often; half of them also dismissed "c" right
    # after "a". Without dismissals "c" leaves the sequences (as serving does) but stays as
    # likely as "b" (it is still taken); with them the ranker learns to put it lower.
    sequences, dismissals = {}, {}
    for u in range(80):
        nxt = "b" if u % 2 else "c"
        sequences[f"u{u}"] = ["s", "a", nxt, "e"]
        if u % 4 in (1, 3):  # users who took b dismissed c on the way
            dismissals[f"u{u}"] = ((2, "c"),)
    model = {"hidden": 16, "n_blocks": 1, "n_heads": 1, "dropout": 0.0, "max_length": 8}
    config = TrainConfig(epochs=20, batch_size=80, learning_rate=2e-2, progress=False, seed=0)

    def p_c_minus_p_b(result):
        scores = score_all_items(result.model, result.vocab, [["s", "a"]])[0]
        probs = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
        return probs[result.vocab.index("c") - 1] - probs[result.vocab.index("b") - 1]

    plain = train_sasrec(sequences, [], model, config)
    taught = train_sasrec(sequences, [], model, config, dismissals=dismissals)
    assert plain.vocab == taught.vocab  # dismissed items were in the sequences' vocabulary already
    assert abs(p_c_minus_p_b(plain)) < 0.1
    assert p_c_minus_p_b(taught) < -0.15


def test_train_with_dismissals_and_measure_both_rankers_from_the_command_line(tmp_path: Path):
    ratings = synthetic_ratings()
    ratings.loc[ratings.index % 5 == 0, "rating"] = 1.0  # every fifth rating: a dismissal
    data = write_movielens_small_layout(tmp_path / "data", ratings, synthetic_items())
    tiny = "--epochs 2 --hidden 16 --blocks 1 --max-length 16 --batch-size 64 --threads 1"
    tiny += " --no-progress --no-register"  # the working directory's registry is not the test's
    checkpoints = {}
    for name, extra in (("plain", ""), ("dismissals", "--dismissals --dismissal-weight 0.5")):
        checkpoints[name] = tmp_path / f"{name}.pt"
        command = f"train --dataset ml-latest-small --split temporal {tiny} {extra}"
        args = build_parser().parse_args(
            [*command.split(), "--data", str(data), "--out", str(checkpoints[name])]
        )
        assert args.func(args) == 0
    plain, taught = (load_checkpoint(p).metadata for p in checkpoints.values())
    assert plain["train_dismissals"] == 0 and taught["train_dismissals"] > 0
    # ... and serving feeds each the history it was trained on (serving.pipeline.model_history)
    assert (plain["history"], taught["history"]) == ("all_interactions", "without_dismissed")
    assert history_keeps_dismissed(plain) and not history_keeps_dismissed(taught)
    assert history_keeps_dismissed({}) and not history_keeps_dismissed(
        {"train_dismissals": 3}
    )  # older files
    assert taught["train_config"]["dismissal_weight"] == 0.5

    out = tmp_path / "dismissals.json"
    args = build_parser().parse_args(
        [
            *["bench", "dismissals", "--dataset", "ml-latest-small"],
            *("--data", str(data), "--json", str(out)),
            *("--without", str(checkpoints["plain"]), "--with", str(checkpoints["dismissals"])),
        ]
    )
    assert args.func(args) == 0
    figures = json.loads(out.read_text())
    assert figures["test_requests"] > 0 and figures["disliked_targets"] > 0
    for kind in ("protocol", "serving"):
        assert 0.0 <= figures[f"with_{kind}_disliked_hr10"] <= 1.0
        low, high = (figures[f"{kind}_hr10_diff_ci95_{end}"] for end in ("low", "high"))
        assert low <= figures[f"{kind}_hr10_diff"] <= high
