"""The ranking interface the serving layer calls, and its two implementations.

``Ranker.score(history, candidates)`` returns one float per candidate (higher = better).
An item the ranker does not know gets :data:`UNKNOWN_ITEM_SCORE`, below every real score, so
unknown candidates sink to the bottom instead of failing the request.

``SASRecRanker`` also exports what retrieval needs: ``item_embeddings()`` (ids + the tied item
embedding matrix) and ``encode_user(history)`` (the last hidden state); their dot product equals
the model's logit, so ANN search with the user vector is the model's own first-stage ranking.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from ranker.checkpoint import Checkpoint, load_checkpoint
from ranker.data import ItemVocabulary, histories_to_array
from ranker.model import SASRec, last_position_states

UNKNOWN_ITEM_SCORE = -1.0e9


@runtime_checkable
class Ranker(Protocol):
    model_version: str

    def score(self, history: Sequence[str], candidates: Sequence[str]) -> np.ndarray:
        """(len(candidates),) float32 scores for one user's ``history`` (oldest first)."""
        ...

    def score_batch(
        self, histories: Sequence[Sequence[str]], candidates: Sequence[Sequence[str]]
    ) -> list[np.ndarray]:
        """One score array per user; candidate lists may differ in length."""
        ...


class SASRecRanker:
    """Scores candidates with a trained SASRec checkpoint, or an ensemble of them (CPU,
    inference mode)."""

    def __init__(self, checkpoint: Checkpoint) -> None:
        self._model = checkpoint.model.eval()
        self._vocab = checkpoint.vocab
        self.model_version = checkpoint.model_version
        self.metadata = checkpoint.metadata
        self._max_length = checkpoint.model.max_length
        # Trained on sequences that keep dismissed items (``ranker.fit.split_metadata``)?
        self.keeps_dismissed = checkpoint.keeps_dismissed

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> SASRecRanker:
        return cls(load_checkpoint(path))

    @property
    def vocabulary(self) -> ItemVocabulary:
        return self._vocab

    def _candidate_scores(self, user_vector: torch.Tensor, candidates: Sequence[str]) -> np.ndarray:
        index = torch.tensor([self._vocab.index(c) for c in candidates], dtype=torch.long)
        known = index > 0
        scores = torch.full((len(candidates),), UNKNOWN_ITEM_SCORE, dtype=torch.float32)
        if known.any():
            vectors = self._model.item_vectors(index[known])  # (K, H)
            scores[known] = vectors @ user_vector  # tied embeddings: the model's logits
        return scores.numpy()

    @torch.inference_mode()
    def score(self, history: Sequence[str], candidates: Sequence[str]) -> np.ndarray:
        """One request: only the last position is computed (``last_state``), not the whole
        padded sequence; equal to ``score_batch`` up to float rounding."""
        user = self._model.last_state(self._vocab.encode(history))
        return self._candidate_scores(user, candidates)

    @torch.inference_mode()
    def score_batch(
        self, histories: Sequence[Sequence[str]], candidates: Sequence[Sequence[str]]
    ) -> list[np.ndarray]:
        if len(histories) != len(candidates):
            raise ValueError("histories and candidates must have the same length")
        users = self._user_vectors(histories)
        return [self._candidate_scores(u, c) for u, c in zip(users, candidates, strict=True)]

    def _user_vectors(self, histories: Sequence[Sequence[str]]) -> torch.Tensor:
        batch = torch.from_numpy(histories_to_array(histories, self._vocab, self._max_length))
        return self._model.user_vectors(batch)  # (N, H)

    @torch.inference_mode()
    def encode_user(self, history: Sequence[str]) -> np.ndarray:
        """(H,) float32 user vector; ``item_embeddings()[1] @ vector`` are the model's logits.

        A history with no known item gives the vector of an all-padding input (a fixed prior).
        Only the last position is computed (``last_position_state``), not the whole padded
        sequence; the vectors agree with ``SASRec.user_vectors`` up to float rounding."""
        return self._model.last_state(self._vocab.encode(history)).numpy().copy()

    @torch.inference_mode()
    def encode_users(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        """(N, H) float32: ``encode_user`` of each history, in one pass over the batch padded to
        its longest history (``ranker.model.last_position_states``; an ensemble encodes one
        history at a time); each row equals ``encode_user`` up to float rounding. Serving's
        micro-batches call it (``serving.batching``)."""
        indices = [self._vocab.encode(history) for history in histories]
        model = self._model
        if not isinstance(model, SASRec):  # an ensemble: one user at a time, as encode_user
            return np.stack([model.last_state(i).numpy() for i in indices]).reshape(
                len(indices), -1
            )
        return last_position_states(model, indices).numpy().copy()

    @torch.inference_mode()
    def item_embeddings(self) -> tuple[list[str], np.ndarray]:
        """(item ids, (n_items, H) float32 matrix), row i belongs to item ids[i]."""
        every_item = torch.arange(1, len(self._vocab) + 1)
        matrix = self._model.item_vectors(every_item).detach().numpy().copy()
        return list(self._vocab.item_ids), matrix


class PopularityRanker:
    """Fallback: scores by (recent) popularity counts; ignores the history.

    Known items score their count (>= 1); unknown items get ``UNKNOWN_ITEM_SCORE``.
    """

    def __init__(self, counts: dict[str, float], model_version: str = "popularity") -> None:
        self._counts = dict(counts)
        self.model_version = model_version

    @classmethod
    def from_items(
        cls, items: Iterable[str], model_version: str = "popularity"
    ) -> PopularityRanker:
        return cls(dict(Counter(items)), model_version)

    def score(self, history: Sequence[str], candidates: Sequence[str]) -> np.ndarray:
        return np.array(
            [self._counts.get(c, UNKNOWN_ITEM_SCORE) for c in candidates], dtype=np.float32
        )

    def score_batch(
        self, histories: Sequence[Sequence[str]], candidates: Sequence[Sequence[str]]
    ) -> list[np.ndarray]:
        if len(histories) != len(candidates):
            raise ValueError("histories and candidates must have the same length")
        return [self.score(h, c) for h, c in zip(histories, candidates, strict=True)]
