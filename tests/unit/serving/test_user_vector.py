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
