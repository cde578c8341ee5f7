"""SASRec-family sequential transformer (Kang & McAuley 2018), trained with full softmax CE.

nanoGPT-shaped: a config dataclass, small modules, tensor shapes in comments. Item index 0 is
padding; real items are ``1..n_items``. Sequences are LEFT-padded to ``max_length`` so the last
position always holds the newest item. The output embedding is tied to the input item embedding,
so ``hidden_state · item_embedding`` is exactly the model's logit: retrieval can use the user vector
(the last hidden state) for ANN search over the item embedding matrix.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import cast

import torch
from torch import nn
from torch.nn import functional as F

PAD = 0


@dataclass(frozen=True)
class SASRecConfig:
    n_items: int  # real items; the embedding table has n_items + 1 rows (row 0 = padding)
    max_length: int = 200
    hidden: int = 64
    n_blocks: int = 2
    n_heads: int = 1
    dropout: float = 0.2

    def to_dict(self) -> dict[str, int | float]:
        return asdict(self)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        assert config.hidden % config.n_heads == 0, "hidden must be divisible by n_heads"
        self.n_heads = config.n_heads
        self.qkv = nn.Linear(config.hidden, 3 * config.hidden)
        self.proj = nn.Linear(config.hidden, config.hidden)
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        # x: (B, L, H); allowed: (B, 1, L, L) bool, True where query i may attend to key j
        b, length, h = x.shape
        q, k, v = self.qkv(x).split(h, dim=2)
        # (B, heads, L, H/heads)
        q = q.view(b, length, self.n_heads, h // self.n_heads).transpose(1, 2)
        k = k.view(b, length, self.n_heads, h // self.n_heads).transpose(1, 2)
        v = v.view(b, length, self.n_heads, h // self.n_heads).transpose(1, 2)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0
        )
        y = y.transpose(1, 2).contiguous().view(b, length, h)  # (B, L, H)
        return self.proj(y)


class FeedForward(nn.Module):
    """SASRec's point-wise feed-forward network (two linear maps, ReLU between)."""

    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(config.hidden, config.hidden)
        self.out = nn.Linear(config.hidden, config.hidden)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.out(self.drop(F.relu(self.fc(x)))))


class Block(nn.Module):
    """Pre-norm transformer block with residual connections."""

    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        self.ln_attn = nn.LayerNorm(config.hidden)
        self.attn = CausalSelfAttention(config)
        self.drop = nn.Dropout(config.dropout)
        self.ln_ffn = nn.LayerNorm(config.hidden)
        self.ffn = FeedForward(config)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln_attn(x), allowed))
        return x + self.ffn(self.ln_ffn(x))


class SASRec(nn.Module):
    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        self.config = config
        self.item_embedding = nn.Embedding(config.n_items + 1, config.hidden, padding_idx=PAD)
        self.position_embedding = nn.Embedding(config.max_length, config.hidden)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_blocks))
        self.ln_final = nn.LayerNorm(config.hidden)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()

    def forward(self, item_ids: torch.Tensor) -> torch.Tensor:
        """Hidden state at every position: (B, L) item indices -> (B, L, H).

        Position ``t``'s output depends only on positions ``<= t`` (causal), and padding keys are
        never attended to. Padding positions attend to themselves only, so no row is all-masked.
        """
        length = item_ids.shape[1]
        if length > self.config.max_length:
            raise ValueError(f"sequence length {length} > max_length {self.config.max_length}")
        is_item = item_ids != PAD  # (B, L)
        positions = torch.arange(length, device=item_ids.device)  # (L,)
        x = self.item_embedding(item_ids) * math.sqrt(self.config.hidden)  # (B, L, H)
        x = x + self.position_embedding(positions)[None]  # learned absolute positions
        x = self.drop(x) * is_item[..., None]  # zero the padding positions
        causal = torch.ones(length, length, dtype=torch.bool, device=item_ids.device).tril()
        diagonal = torch.eye(length, dtype=torch.bool, device=item_ids.device)
        allowed = (causal[None] & is_item[:, None, :]) | diagonal[None]  # (B, L, L)
        allowed = allowed[:, None]  # (B, 1, L, L), broadcast over heads
        for block in self.blocks:
            x = block(x, allowed) * is_item[..., None]
        return self.ln_final(x)  # (B, L, H)

    @property
    def max_length(self) -> int:
        return self.config.max_length

    def output_items(self) -> torch.Tensor:
        """Output vectors of every real item, (n_items, H): row j is item index j + 1 (the
        padding row 0 left out). A view of the tied embedding, so gradients reach it."""
        return self.item_embedding.weight[1:]

    def item_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores of every real item: (..., H) -> (..., n_items); column j is item index j + 1."""
        return hidden @ self.output_items().T

    def item_vectors(self, index: torch.Tensor) -> torch.Tensor:
        """Output vectors of item indices: (...,) -> (..., H); ``user_vector · item_vector`` is
        the logit (the output embedding is tied to the input one)."""
        return self.item_embedding(index)

    def user_vectors(self, item_ids: torch.Tensor) -> torch.Tensor:
        """The last position's hidden state (the newest item is at the right): (B, L) -> (B, H)."""
        return self.forward(item_ids)[:, -1, :]

    def last_state(self, indices: Sequence[int]) -> torch.Tensor:
        """One user's vector from their known item indices, oldest first: (n,) -> (H,)."""
        return last_position_state(self, indices)


# -- inference for one user: the last position only ----------------------------------------


def last_position_state(model: SASRec, indices: Sequence[int]) -> torch.Tensor:
    """``model.user_vectors`` of one left-padded history, computing only what its last position
    needs: (n,) known item indices, oldest first -> (H,). Call in inference mode, model in eval.

    Equal to the full pass up to float rounding, because in ``SASRec.forward`` padding is never
    attended to by an item and is zeroed after every block: the items alone (at their absolute
    positions ``L - n .. L - 1``) under a plain causal mask give the same item states. The last
    block needs keys and values of every item but the query, attention output and feed-forward
    of the last position only. A history with no known item is the all-padding input, whose
    last state is ``ln_final(0)``.
    """
    config = model.config
    tail = list(indices)[-config.max_length :]
    n = len(tail)
    if n == 0:
        return model.ln_final(torch.zeros(config.hidden))
    positions = torch.arange(config.max_length - n, config.max_length)
    x = model.item_embedding(torch.tensor(tail, dtype=torch.long)) * math.sqrt(config.hidden)
    x = x + model.position_embedding(positions)  # (n, H)
    # nn.ModuleList yields plain Modules; SASRec fills it with Blocks only
    *inner, last = cast("list[Block]", list(model.blocks))
    for block in inner:
        x = x + _attention(block.attn, block.ln_attn(x), last_only=False)
        x = x + block.ffn(block.ln_ffn(x))
    y = x[-1:] + _attention(last.attn, last.ln_attn(x), last_only=True)  # (1, H)
    y = y + last.ffn(last.ln_ffn(y))
    return model.ln_final(y)[0]


def last_position_states(model: SASRec, histories: Sequence[Sequence[int]]) -> torch.Tensor:
    """``last_position_state`` of several users in one pass: N histories of known item indices
    (oldest first, any lengths) -> (N, H). Call in inference mode, model in eval.

    The histories are left-padded to the longest of the batch (not to ``max_length``), each item
    at the absolute position it has alone (``L - n .. L - 1``), and a padding key is never
    attended to (its softmax weight is exactly 0, and padding rows attend to themselves, so no
    row is all-masked and nothing is NaN): every row equals ``last_position_state`` of its
    history up to float rounding (``tests/unit/ranker/test_scoring.py``). Empty histories get
    ``ln_final(0)``, as alone.
    """
    config = model.config
    tails = [list(h)[-config.max_length :] for h in histories]
    lengths = torch.tensor([len(t) for t in tails], dtype=torch.long)
    states = model.ln_final(torch.zeros(len(tails), config.hidden))  # (N, H): the empty ones
    n = int(lengths.max()) if tails else 0
    if n == 0:
        return states
    padded = torch.zeros(len(tails), n, dtype=torch.long)  # (N, n), PAD on the left
    for row, tail in enumerate(tails):
        if tail:
            padded[row, n - len(tail) :] = torch.tensor(tail, dtype=torch.long)
    is_item = padded != PAD  # (N, n)
    positions = torch.arange(config.max_length - n, config.max_length)
    x = model.item_embedding(padded) * math.sqrt(config.hidden)
    x = x + model.position_embedding(positions)[None]  # (N, n, H)
    allowed = ((~_future(n))[None] & is_item[:, None, :]) | torch.eye(n, dtype=torch.bool)[None]
    *inner, last = cast("list[Block]", list(model.blocks))
    for block in inner:
        x = x + _batched_attention(block.attn, block.ln_attn(x), allowed)
        x = x + block.ffn(block.ln_ffn(x))
    y = x[:, -1:] + _batched_attention(last.attn, last.ln_attn(x), allowed[:, -1:])  # (N, 1, H)
    y = y + last.ffn(last.ln_ffn(y))
    known = lengths > 0
    states[known] = model.ln_final(y[:, 0])[known]
    return states


def _batched_attention(
    attn: CausalSelfAttention, x: torch.Tensor, allowed: torch.Tensor
) -> torch.Tensor:
    """``_attention`` over a left-padded batch: x (N, n, H), ``allowed`` (N, q, n) bool for the
    last ``q`` queries of each row (q = n, or 1 for the last position) -> (N, q, H)."""
    batch, n, hidden = x.shape
    queries, heads, size = allowed.shape[1], attn.n_heads, hidden // attn.n_heads
    weight, bias = attn.qkv.weight, attn.qkv.bias
    q = F.linear(x[:, n - queries :], weight[:hidden], bias[:hidden])  # (N, q, H)
    k, v = F.linear(x, weight[hidden:], bias[hidden:]).split(hidden, dim=2)  # (N, n, H) each
    q = q.view(batch, queries, heads, size).transpose(1, 2)  # (N, heads, q, H/heads)
    k = k.view(batch, n, heads, size).transpose(1, 2)
    v = v.view(batch, n, heads, size).transpose(1, 2)
    scores = (q @ k.transpose(2, 3)) * (1.0 / math.sqrt(size))  # (N, heads, q, n)
    scores.masked_fill_(~allowed[:, None], float("-inf"))
    y = torch.softmax(scores, dim=-1) @ v  # (N, heads, q, H/heads)
    return attn.proj(y.transpose(1, 2).reshape(batch, queries, hidden))


def _attention(attn: CausalSelfAttention, x: torch.Tensor, *, last_only: bool) -> torch.Tensor:
    """``CausalSelfAttention`` on one unpadded sequence: (n, H) -> (n, H), or (1, H) for the
    last query only (it may attend to every position). Written out, because for one short
    sequence ``scaled_dot_product_attention`` on CPU takes its generic path, which spent more
    time building and applying its mask than multiplying."""
    n, hidden = x.shape
    heads = attn.n_heads
    if last_only:  # keys and values of every position, the query of the last one only
        weight, bias = attn.qkv.weight, attn.qkv.bias
        q = F.linear(x[-1:], weight[:hidden], bias[:hidden])
        k, v = F.linear(x, weight[hidden:], bias[hidden:]).split(hidden, dim=1)
    else:
        q, k, v = attn.qkv(x).split(hidden, dim=1)
    # (heads, queries or n, H/heads)
    q = q.view(-1, heads, hidden // heads).transpose(0, 1)
    k = k.view(n, heads, hidden // heads).transpose(0, 1)
    v = v.view(n, heads, hidden // heads).transpose(0, 1)
    scores = torch.bmm(q, k.transpose(1, 2)) * (1.0 / math.sqrt(hidden // heads))
    if not last_only:
        scores.masked_fill_(_future(n), float("-inf"))  # (heads, n, n), causal
    y = torch.bmm(torch.softmax(scores, dim=-1), v)
    return attn.proj(y.transpose(0, 1).reshape(-1, hidden))


@functools.lru_cache(maxsize=64)
def _future(n: int) -> torch.Tensor:
    """(n, n) bool, True where the key comes after the query."""
    return torch.ones(n, n, dtype=torch.bool).triu(1)
