"""Dismissals as negative signal in training: an unlikelihood term on the dismissed item.

A dismissal says "not this one, now". The next-item loss (full softmax cross-entropy) only says
what the user did take next; a dismissed item is one negative among thousands and gets almost
no push. So at the moment of each dismissal — the hidden state after the last item the user had
taken before it, which is the state serving would have ranked with — the loss adds the
**unlikelihood** of the dismissed item (Welleck et al., ICLR 2020):

    loss = CE(next items) + λ · mean_d [ −log(1 − p(d | history before d)) ]

with ``p`` the same full softmax over every item. ``−log(1 − p)`` is ≈ ``p`` when the model
already gives the item little mass and grows without bound as ``p → 1``, so it pushes down the
dismissed items the model would have put on top and leaves the rest alone; the gradient moves
mass away from ``d`` towards every other item in proportion to their probability (no item is
singled out as the replacement).

Where the dismissals come from: ``Split.train_dismissals`` (``interactions.dismissals``); dismissed
items are not in the training sequences (serving's ``recent_items`` leaves them out too), and
each dismissal records how many of the user's training items came before it. A dismissal before
the user's first training item (no state to rank with), after the last input position, or of an
item the vocabulary does not know is left out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ranker.data import ItemVocabulary


@dataclass(frozen=True)
class DismissalTargets:
    """Where each usable dismissal sits in the training tensors."""

    rows: np.ndarray  # (K,) row of ``TrainingTensors`` (users in sorted order, >= 2 known items)
    columns: np.ndarray  # (K,) input position whose hidden state ranked the dismissed item
    items: np.ndarray  # (K,) vocabulary index of the dismissed item (1..n)

    def __len__(self) -> int:
        return len(self.rows)

    def in_batch(self, batch_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The dismissals of ``batch_rows``: (position in the batch, column, item) arrays."""
        size = max(int(batch_rows.max(initial=-1)), int(self.rows.max(initial=-1))) + 1
        position = np.full(size, -1, dtype=np.int64)
        position[batch_rows] = np.arange(len(batch_rows))
        found = position[self.rows]
        keep = found >= 0
        return found[keep], self.columns[keep], self.items[keep]


def dismissal_targets(
    sequences: Mapping[str, Sequence[str]],
    dismissals: Mapping[str, Sequence[tuple[int, str]]],
    vocab: ItemVocabulary,
    max_length: int,
) -> DismissalTargets:
    """Map ``(items before, dismissed item)`` pairs onto ``build_training_tensors``' layout.

    Row ``r`` of the tensors is the ``r``-th user (sorted) with at least two known items; its
    input holds ``encoded[:-1]``, the last ``max_length`` of them, left-padded. The state that
    ranked a dismissal made after ``m`` items is the one whose input is item ``m − 1``.
    """
    rows, columns, items = [], [], []
    row = 0
    for user in sorted(sequences):
        encoded = vocab.encode(sequences[user])
        if len(encoded) < 2:
            continue
        n_inputs = len(encoded) - 1
        kept = min(n_inputs, max_length)
        first_kept = n_inputs - kept  # inputs before it were cut off by max_length
        offset = max_length - kept  # left padding
        for before, item in dismissals.get(user, ()):
            index = vocab.index(item)
            last_input = before - 1  # the item the user had taken just before dismissing
            if index == 0 or not first_kept <= last_input < n_inputs:
                continue
            rows.append(row)
            columns.append(offset + last_input - first_kept)
            items.append(index)
        row += 1
    as_array = lambda values: np.asarray(values, dtype=np.int64)  # noqa: E731
    return DismissalTargets(as_array(rows), as_array(columns), as_array(items))


def unlikelihood_loss(
    hidden: torch.Tensor, items: torch.Tensor, dismissed: torch.Tensor
) -> torch.Tensor:
    """Mean ``−log(1 − softmax(hidden @ items.T)[dismissed])``.

    hidden: (K, H) states at the dismissals; items: (N, H) output item vectors (row ``j`` =
    vocabulary index ``j + 1``); dismissed: (K,) indices in ``0..N-1``.
    """
    logits = hidden @ items.T  # (K, N)
    log_p = logits.gather(1, dismissed[:, None]).squeeze(1) - torch.logsumexp(logits, dim=1)
    # log(1 − p) from log p without cancellation; p is clamped below 1 so the loss stays finite
    log_p = torch.clamp(log_p, max=-1e-6)
    return -torch.log(-torch.expm1(log_p)).mean()


def batch_unlikelihood(
    hidden: torch.Tensor, items: torch.Tensor, targets: DismissalTargets, batch_rows: np.ndarray
) -> torch.Tensor | None:
    """The unlikelihood term of one training batch (``None`` when it holds no dismissal).

    hidden: (B, L, H) the model's states for the batch's rows; items: (N, H).
    """
    batch_pos, columns, dismissed = targets.in_batch(batch_rows)
    if len(batch_pos) == 0:
        return None
    states = hidden[torch.from_numpy(batch_pos), torch.from_numpy(columns)]  # (K, H)
    return unlikelihood_loss(states, items, torch.from_numpy(dismissed - 1))
