"""``VectorScorer``: the ranker's scores from the user vector the pipeline already encoded."""

from __future__ import annotations

import numpy as np
import torch

from ranker.checkpoint import Checkpoint
from ranker.data import ItemVocabulary
from ranker.model import SASRec, SASRecConfig
from ranker.scoring import UNKNOWN_ITEM_SCORE, SASRecRanker
from serving.user_vector import EmbeddingRanker, VectorScorer


def test_vector_scores_equal_the_sasrec_rankers_own_scores():
    torch.manual_seed(3)
    vocab = ItemVocabulary(tuple(f"i{k}" for k in range(30)))
    model = SASRec(SASRecConfig(n_items=30, max_length=8, hidden=16, n_blocks=1, dropout=0.1))
    ranker = SASRecRanker(Checkpoint(model.eval(), vocab, "sasrec-test"))
    assert isinstance(ranker, EmbeddingRanker)
    scorer = VectorScorer(ranker)
    candidates = ["i4", "unknown", "i29", "i0", "i7", "i4"]
    for history in (["i1", "i2", "i3"], [f"i{k}" for k in range(20)], [], ["never-seen"]):
        expected = ranker.score(history, candidates)
        got = scorer.score(ranker.encode_user(history), candidates)
        assert got.dtype == np.float32 and got[1] == UNKNOWN_ITEM_SCORE
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert scorer.score(ranker.encode_user(["i1"]), []).shape == (0,)


def test_scores_of_catalogue_rows_equal_the_scores_of_their_ids():
    """``score_rows`` (the pipeline's path: candidates as catalogue rows) maps each catalogue
    once; two catalogues in turn, unknown and new (``extra``) items among them."""
    torch.manual_seed(5)
    vocab = ItemVocabulary(tuple(f"i{k}" for k in range(30)))
    model = SASRec(SASRecConfig(n_items=30, max_length=8, hidden=16, n_blocks=1, dropout=0.1))
    ranker = SASRecRanker(Checkpoint(model.eval(), vocab, "sasrec-test"))
    scorer = VectorScorer(ranker, extra={"new": np.full(16, 0.5, dtype=np.float32)})
    vector = ranker.encode_user(["i1", "i2"])
    first = ["i3", "unknown", "new", *(f"i{k}" for k in range(29, 9, -1))]
    second = [f"i{k}" for k in range(30)] + ["gone"]
    rng = np.random.default_rng(0)
    for ids in (first, second, first):  # a catalogue seen again is mapped from its cache
        rows = rng.integers(0, len(ids), size=40)
        got = scorer.score_rows(vector, ids, rows)
        expected = scorer.score(vector, [ids[r] for r in rows])
        np.testing.assert_array_equal(got, expected)
    assert scorer.score_rows(vector, first, np.zeros(0, dtype=np.int64)).shape == (0,)
    assert scorer.score_rows(vector, first, np.array([1]))[0] == UNKNOWN_ITEM_SCORE
