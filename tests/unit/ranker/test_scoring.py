"""Ranker interface: checkpoint round trip, unknown items, retrieval exports, popularity fallback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import ModelError, NotFoundError
from ranker.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from ranker.data import ItemVocabulary, left_pad
from ranker.model import SASRec, SASRecConfig
from ranker.scoring import UNKNOWN_ITEM_SCORE, PopularityRanker, Ranker, SASRecRanker


@pytest.fixture
def checkpoint_path(tmp_path: Path) -> Path:
    torch.manual_seed(1)
    vocab = ItemVocabulary(tuple(f"i{k}" for k in range(20)))
    model = SASRec(
        SASRecConfig(n_items=20, max_length=8, hidden=16, n_blocks=1, dropout=0.1)
    ).eval()
    path = tmp_path / "ranker.pt"
    save_checkpoint(path, model, vocab, {"dataset": "synthetic", "best_epoch": 3})
    return path


def test_checkpoint_round_trip_keeps_scores_version_and_metadata(
    checkpoint_path: Path, tmp_path: Path
) -> None:
    first = load_checkpoint(checkpoint_path)
    again = tmp_path / "again.pt"
    save_checkpoint(again, first.model, first.vocab, first.metadata)
    second = load_checkpoint(again)
    assert first.model_version == second.model_version and first.model_version.startswith("sasrec-")
    assert second.metadata == {"dataset": "synthetic", "best_epoch": 3}
    history, candidates = ["i1", "i2", "i3"], ["i4", "i5", "i0"]
    np.testing.assert_allclose(
        SASRecRanker(first).score(history, candidates),
        SASRecRanker(second).score(history, candidates),
    )


def test_missing_or_foreign_checkpoint_raises_project_errors(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save({"something": "else"}, tmp_path / "other.pt")
    with pytest.raises(ModelError):
        load_checkpoint(tmp_path / "other.pt")


def test_unknown_candidates_score_below_every_known_item(checkpoint_path: Path) -> None:
    ranker = SASRecRanker.from_checkpoint(checkpoint_path)
    assert isinstance(ranker, Ranker)
    scores = ranker.score(["i1", "never-seen", "i2"], ["i3", "brand-new", "i4"])
    assert scores.shape == (3,) and scores.dtype == np.float32
    assert scores[1] == UNKNOWN_ITEM_SCORE
    assert scores[1] < scores[[0, 2]].min()


def test_batch_scores_equal_single_scores(checkpoint_path: Path) -> None:
    ranker = SASRecRanker.from_checkpoint(checkpoint_path)
    histories = [["i1", "i2"], ["i9"], []]
    candidates = [["i3", "i4"], ["i0", "i1", "i2"], ["i5"]]
    batch = ranker.score_batch(histories, candidates)
    for h, c, b in zip(histories, candidates, batch, strict=True):
        np.testing.assert_allclose(b, ranker.score(h, c), rtol=1e-5, atol=1e-5)


def test_user_vector_times_item_embeddings_equals_scores(checkpoint_path: Path) -> None:
    ranker = SASRecRanker.from_checkpoint(checkpoint_path)
    history = ["i3", "i7", "i1"]
    ids, matrix = ranker.item_embeddings()
    assert matrix.shape == (20, 16) and ids[0] == "i0"
    via_vectors = matrix @ ranker.encode_user(history)
    np.testing.assert_allclose(via_vectors, ranker.score(history, ids), rtol=1e-4, atol=1e-5)


def test_history_longer_than_max_length_uses_the_newest_items(checkpoint_path: Path) -> None:
    ranker = SASRecRanker.from_checkpoint(checkpoint_path)
    long_history = [f"i{k % 20}" for k in range(30)]
    np.testing.assert_allclose(
        ranker.score(long_history, ["i1", "i2"]),
        ranker.score(long_history[-8:], ["i1", "i2"]),
        atol=1e-6,
    )


def test_popularity_fallback_ranks_by_count_and_sinks_unknown_items() -> None:
    ranker = PopularityRanker.from_items(["a", "a", "a", "b", "c", "c"])
    assert isinstance(ranker, Ranker)
    scores = ranker.score(["whatever"], ["b", "a", "zzz", "c"])
    assert scores.tolist()[:2] == [1.0, 3.0] and scores[3] == 2.0
    assert scores[2] == UNKNOWN_ITEM_SCORE
    assert [s.tolist() for s in ranker.score_batch([[], []], [["a"], ["c", "b"]])] == [
        [3.0],
        [2.0, 1.0],
    ]


@pytest.mark.parametrize(("n_blocks", "n_heads"), [(1, 1), (2, 1), (3, 2)])
def test_last_position_encoding_equals_the_full_padded_pass(n_blocks, n_heads):
    """``encode_user`` computes only the last position of the unpadded items; it must give the
    vector of ``SASRec.user_vectors`` on the left-padded input (what training and eval use)."""
    ranker, histories = _tiny_ranker(n_blocks, n_heads, seed=n_blocks)
    vocab, max_length = ranker.vocabulary, ranker._model.max_length
    for history in histories:
        with torch.inference_mode():
            padded = left_pad(vocab.encode(history), max_length)[None]
            expected = ranker._model.user_vectors(torch.from_numpy(padded))[0].numpy()
        got = ranker.encode_user(history)
        assert got.dtype == np.float32 and got.shape == (16,)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # the cached vector of an empty history is handed out as a copy
    ranker.encode_user([])[:] = 7.0
    assert not (ranker.encode_user([]) == 7.0).any()


@pytest.mark.parametrize(("n_blocks", "n_heads"), [(1, 1), (2, 1), (3, 2)])
def test_one_batched_pass_gives_each_user_the_vector_it_gets_alone(n_blocks, n_heads):
    """``encode_users`` (serving's micro-batches) pads ragged histories to the longest and masks
    the padding: each row must be ``encode_user`` of its history, whatever else is in the batch
    (empty, unknown-only, over-long histories included)."""
    ranker, histories = _tiny_ranker(n_blocks, n_heads, seed=10 + n_blocks)
    alone = np.stack([ranker.encode_user(h) for h in histories])
    forward = list(range(len(histories)))
    for order in (forward, forward[::-1]):
        got = ranker.encode_users([histories[i] for i in order])
        assert got.dtype == np.float32 and got.shape == (len(order), 16)
        np.testing.assert_allclose(got, alone[order], rtol=1e-5, atol=1e-6)
    assert ranker.encode_users([["i3"]]).shape == (1, 16)
    assert ranker.encode_users([]).shape == (0, 16)


def _tiny_ranker(n_blocks: int, n_heads: int, *, seed: int) -> tuple[SASRecRanker, list[list[str]]]:
    """A random 40-item SASRec (histories of at most 12) and histories of every kind: empty,
    unknown-only, repeated and unknown items, shorter, as long as and longer than the model's."""
    torch.manual_seed(seed)
    vocab = ItemVocabulary(tuple(f"i{k}" for k in range(40)))
    config = SASRecConfig(n_items=40, max_length=12, hidden=16, n_blocks=n_blocks, n_heads=n_heads)
    ranker = SASRecRanker(Checkpoint(SASRec(config).eval(), vocab, "sasrec-test"))
    rng = np.random.default_rng(n_blocks)
    histories = [[], ["never-seen"], ["i3"], ["i1", "unknown", "i1", "i7"]]
    histories += [[f"i{k}" for k in rng.integers(0, 40, size=n)] for n in (5, 11, 12, 13, 30)]
    return ranker, histories
