"""The learning-rate schedule: constant stays put; cosine starts at the base rate and ends at 0."""

from __future__ import annotations

import itertools

import pytest
import torch

from core.errors import ModelError
from ranker.train import TrainConfig, learning_rate_schedule


def rates(schedule: str, epochs: int, steps_per_epoch: int) -> list[float]:
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    config = TrainConfig(epochs=epochs, lr_schedule=schedule)
    scheduler = learning_rate_schedule(optimizer, config, steps_per_epoch)
    seen = []
    for _ in range(epochs * steps_per_epoch):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    seen.append(optimizer.param_groups[0]["lr"])  # after the last step
    return seen


def test_constant_schedule_keeps_the_base_rate() -> None:
    assert set(rates("constant", epochs=3, steps_per_epoch=4)) == {0.01}


def test_cosine_schedule_decays_monotonically_from_base_to_zero() -> None:
    seen = rates("cosine", epochs=3, steps_per_epoch=4)
    assert seen[0] == pytest.approx(0.01)
    assert seen[len(seen) // 2] == pytest.approx(0.005)  # half way: half the rate
    assert seen[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in itertools.pairwise(seen))


def test_unknown_schedule_is_a_clear_error() -> None:
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    with pytest.raises(ModelError, match="unknown lr_schedule 'linear'"):
        learning_rate_schedule(optimizer, TrainConfig(lr_schedule="linear"), 1)
