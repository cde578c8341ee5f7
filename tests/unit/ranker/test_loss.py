"""The blockwise full-softmax cross-entropy equals PyTorch's, value and gradients."""

import pytest
import torch
from torch.nn import functional as F

from ranker.loss import full_softmax_cross_entropy


def _reference(hidden, items, targets):
    hidden = hidden.detach().clone().requires_grad_(True)
    items = items.detach().clone().requires_grad_(True)
    loss = F.cross_entropy(hidden @ items.T, targets)
    loss.backward()
    return loss.detach(), hidden.grad, items.grad


@pytest.mark.parametrize("block_rows", [1, 7, 64, 1000])  # 1000 > rows: one block
def test_value_and_gradients_equal_cross_entropy(block_rows):
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(50, 8, generator=generator, dtype=torch.float64) * 3
    items = torch.randn(30, 8, generator=generator, dtype=torch.float64)
    targets = torch.randint(0, 30, (50,), generator=generator)
    expected_loss, expected_dh, expected_di = _reference(hidden, items, targets)

    h = hidden.clone().requires_grad_(True)
    w = items.clone().requires_grad_(True)
    loss = full_softmax_cross_entropy(h, w, targets, block_rows)
    (2.5 * loss).backward()  # the upstream gradient is applied

    torch.testing.assert_close(loss.detach(), expected_loss)
    torch.testing.assert_close(h.grad, 2.5 * expected_dh)
    torch.testing.assert_close(w.grad, 2.5 * expected_di)


def test_large_logits_stay_finite():
    hidden = torch.tensor([[100.0, 0.0], [0.0, -100.0]])
    items = torch.tensor([[50.0, 0.0], [0.0, 50.0], [-50.0, 0.0]])
    targets = torch.tensor([2, 0])
    expected_loss, _, _ = _reference(hidden, items, targets)
    loss = full_softmax_cross_entropy(hidden.requires_grad_(True), items, targets)
    assert torch.isfinite(loss) and loss.item() == pytest.approx(expected_loss.item(), rel=1e-6)
    loss.backward()
    assert torch.isfinite(hidden.grad).all()


def test_gradient_reaches_a_slice_of_a_larger_table():
    """Training passes ``SASRec.output_items()``, a slice of the table without the padding row:
    row 0 gets no gradient."""
    table = torch.randn(6, 4, requires_grad=True)
    hidden = torch.randn(3, 4)
    full_softmax_cross_entropy(hidden, table[1:], torch.tensor([0, 4, 2])).backward()
    assert torch.equal(table.grad[0], torch.zeros(4))
    assert table.grad[1:].abs().sum() > 0


@pytest.mark.parametrize(
    ("hidden", "items", "targets", "message"),
    [
        (torch.zeros(3, 4), torch.zeros(5, 2), torch.zeros(3, dtype=torch.long), "expected"),
        (torch.zeros(3, 4), torch.zeros(5, 4), torch.zeros(2, dtype=torch.long), "targets"),
        (torch.zeros(0, 4), torch.zeros(5, 4), torch.zeros(0, dtype=torch.long), "no labelled"),
    ],
)
def test_bad_shapes_are_refused_clearly(hidden, items, targets, message):
    with pytest.raises(ValueError, match=message):
        full_softmax_cross_entropy(hidden, items, targets)
