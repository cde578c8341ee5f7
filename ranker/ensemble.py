"""Several SASRecs fitted on the same data (different seeds), scored as one model.

The ensemble's logit of an item is the mean of its members' logits. Each member's logit is a dot
product ``user_vector · item_vector`` (tied embeddings), so the mean is one dot product again:
the members' user vectors, each divided by the number of members, concatenated, against their
item vectors concatenated. The ensemble therefore offers the interface the scoring code, the
evaluation and retrieval use on a single :class:`~ranker.model.SASRec` (``user_vectors``,
``last_state``, ``item_vectors``, ``item_logits``, ``max_length``); an ANN index over its item
vectors simply has ``members × hidden`` dimensions.

Averaging the logits of independently initialised runs removes part of each run's own error
(the runs agree on the signal, not on their noise); it costs one forward pass per member.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from core.errors import ModelError
from ranker.model import SASRec


class SASRecEnsemble(nn.Module):
    def __init__(self, members: Sequence[SASRec]) -> None:
        super().__init__()
        if not members:
            raise ModelError("an ensemble needs at least one member")
        shapes = {(m.config.n_items, m.config.max_length) for m in members}
        if len(shapes) != 1:
            raise ModelError(
                f"ensemble members disagree on (n_items, max_length): {sorted(shapes)}"
            )
        self.members = nn.ModuleList(members)  # registers the parameters (eval(), state)
        self._members: tuple[SASRec, ...] = tuple(members)  # the same modules, typed
        self.max_length = members[0].config.max_length

    def _share(self, vectors: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(vectors, dim=-1) / len(self._members)

    def user_vectors(self, item_ids: torch.Tensor) -> torch.Tensor:
        """(B, L) item indices -> (B, members × H)."""
        return self._share([m.user_vectors(item_ids) for m in self._members])

    def last_state(self, indices: Sequence[int]) -> torch.Tensor:
        """One user's vector from their known item indices: (n,) -> (members × H,)."""
        return self._share([m.last_state(indices) for m in self._members])

    def item_vectors(self, index: torch.Tensor) -> torch.Tensor:
        """(...,) item indices -> (..., members × H)."""
        return torch.cat([m.item_vectors(index) for m in self._members], dim=-1)

    def item_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Mean member logit of every real item: (..., members × H) -> (..., n_items)."""
        weights = torch.cat([m.output_items() for m in self._members], dim=1)
        return hidden @ weights.T


# What the scoring code, the evaluation and the checkpoints accept as "the ranker's model".
RankingModel = SASRec | SASRecEnsemble
