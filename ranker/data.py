"""Item vocabulary and padded tensors for the SASRec ranker.

Training examples are point in time by construction: position ``t`` of the input holds the
``t``-th item of a user's training sequence and the label is item ``t + 1``; causal attention
means the prediction for ``t + 1`` sees only items ``<= t``, i.e. events before the target.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ranker.model import PAD


@dataclass(frozen=True)
class ItemVocabulary:
    """Item id <-> index; index 0 is padding, real items are ``1..len(self)``."""

    item_ids: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {item: i + 1 for i, item in enumerate(self.item_ids)})

    @classmethod
    def from_sequences(cls, sequences: Iterable[Sequence[str]]) -> ItemVocabulary:
        return cls(tuple(sorted({item for seq in sequences for item in seq})))

    def __len__(self) -> int:
        return len(self.item_ids)

    def __contains__(self, item: object) -> bool:
        return item in self._index  # type: ignore[attr-defined]

    def index(self, item: str) -> int:
        """The item's index, or ``PAD`` (0) for an unknown item."""
        return self._index.get(item, PAD)  # type: ignore[attr-defined]

    def encode(self, items: Iterable[str]) -> list[int]:
        """Known items' indices, in order; unknown items are dropped (the model never saw them)."""
        index = self._index  # type: ignore[attr-defined]
        return [index[i] for i in items if i in index]


def left_pad(indices: Sequence[int], length: int) -> np.ndarray:
    """The last ``length`` indices, left-padded with PAD: (length,) int64."""
    tail = list(indices)[-length:]
    out = np.full(length, PAD, dtype=np.int64)
    if tail:
        out[length - len(tail) :] = tail
    return out


def histories_to_array(
    histories: Sequence[Sequence[str]], vocab: ItemVocabulary, length: int
) -> np.ndarray:
    """(N, length) int64 of left-padded, encoded histories."""
    out = np.full((len(histories), length), PAD, dtype=np.int64)
    for row, history in enumerate(histories):
        out[row] = left_pad(vocab.encode(history), length)
    return out


@dataclass(frozen=True)
class TrainingTensors:
    inputs: np.ndarray  # (U, L) items 0..n-2 of each sequence, left-padded
    targets: np.ndarray  # (U, L) items 1..n-1 (the next item at each position), PAD where none


def build_training_tensors(
    sequences: Mapping[str, Sequence[str]], vocab: ItemVocabulary, max_length: int
) -> TrainingTensors:
    """Next-item training pairs: at position t the input is item t, the label item t + 1.

    Sequences longer than ``max_length + 1`` keep their most recent part; sequences with fewer
    than two known items yield no example.
    """
    inputs, targets = [], []
    for user in sorted(sequences):
        encoded = vocab.encode(sequences[user])
        if len(encoded) < 2:
            continue
        inputs.append(left_pad(encoded[:-1], max_length))
        targets.append(left_pad(encoded[1:], max_length))
    if not inputs:
        empty = np.zeros((0, max_length), dtype=np.int64)
        return TrainingTensors(empty, empty.copy())
    return TrainingTensors(np.stack(inputs), np.stack(targets))


def shuffled_batches(
    n_rows: int, batch_size: int, rng: np.random.Generator
) -> Iterator[np.ndarray]:
    """Row indices in a new random order each call, ``batch_size`` at a time."""
    order = rng.permutation(n_rows)
    for start in range(0, n_rows, batch_size):
        yield order[start : start + batch_size]
