"""Full softmax cross-entropy over every item, computed a block of rows at a time.

``F.cross_entropy(hidden @ items.T, targets)`` materialises the (M, n_items) logits, their
log-softmax and, in the backward pass, a zero-filled gradient of the same size: for ML-1M
(≈ 8,000 labelled positions per batch × 3,416 items) that is several passes over 110 MB each,
and on a CPU those memory-bound passes took over half of a training step. Here each block of
rows goes from logits to its gradient (``softmax − one_hot``) while it is still in cache, and
the gradients of ``hidden`` and ``items`` are accumulated with two matrix products per block.
The result equals ``F.cross_entropy`` up to float rounding (tested); the matrix products are the
same as autograd's, so only the memory traffic goes away.

The gradients are computed in the forward pass, so the loss must be used for one backward pass
(as in training); evaluation uses the model's logits directly.
"""

from __future__ import annotations

from typing import Any

import torch

DEFAULT_BLOCK_ROWS = 256


class _BlockwiseSoftmaxCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        hidden: torch.Tensor,
        items: torch.Tensor,
        targets: torch.Tensor,
        block_rows: int,
    ) -> torch.Tensor:
        # hidden: (M, H); items: (N, H); targets: (M,) in 0..N-1
        rows = hidden.shape[0]
        grad_hidden = torch.empty_like(hidden)
        grad_items = torch.zeros_like(items)
        total = hidden.new_zeros(())
        for start in range(0, rows, block_rows):
            block = hidden[start : start + block_rows]  # (b, H)
            target = targets[start : start + block_rows]  # (b,)
            picked = torch.arange(len(target), device=hidden.device)
            logits = block @ items.T  # (b, N)
            log_norm = torch.logsumexp(logits, dim=1)  # (b,)
            total += (log_norm - logits[picked, target]).sum()
            probs = logits.sub_(log_norm[:, None]).exp_()  # softmax, in place
            probs[picked, target] -= 1.0  # d(loss_row)/d(logits) = softmax − one_hot
            torch.mm(probs, items, out=grad_hidden[start : start + block_rows])
            grad_items.addmm_(probs.T, block)
        ctx.save_for_backward(grad_hidden / rows, grad_items / rows)
        return total / rows

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor) -> tuple[Any, ...]:
        grad_hidden, grad_items = ctx.saved_tensors
        return grad_hidden * grad_loss, grad_items * grad_loss, None, None


def full_softmax_cross_entropy(
    hidden: torch.Tensor,
    items: torch.Tensor,
    targets: torch.Tensor,
    block_rows: int = DEFAULT_BLOCK_ROWS,
) -> torch.Tensor:
    """Mean cross-entropy of ``softmax(hidden @ items.T)`` against ``targets``.

    hidden: (M, H) states; items: (N, H) output item vectors; targets: (M,) int64 in
    ``0..N-1``. Equals ``F.cross_entropy(hidden @ items.T, targets)``.
    """
    if hidden.ndim != 2 or items.ndim != 2 or hidden.shape[1] != items.shape[1]:
        raise ValueError(
            f"expected (M, H) and (N, H), got {tuple(hidden.shape)} and {tuple(items.shape)}"
        )
    if targets.shape != hidden.shape[:1]:
        raise ValueError(f"expected {hidden.shape[0]} targets, got shape {tuple(targets.shape)}")
    if hidden.shape[0] == 0:
        raise ValueError("no labelled positions: the mean loss of nothing is undefined")
    if block_rows < 1:
        raise ValueError(f"block_rows must be >= 1, got {block_rows}")
    return _BlockwiseSoftmaxCrossEntropy.apply(hidden, items, targets, block_rows)
