"""Training loop: full softmax cross-entropy over all items, Adam, early stopping on validation.

Full cross-entropy (every item is a negative at every position) is what makes SASRec strong
(Klenitskiy & Vasilev, RecSys 2023, "SASRec+"); it also converges in far fewer epochs than the
original one-negative BCE. Model selection uses the validation requests only, never the test.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from core.errors import ModelError
from evaluation.metrics import hit_rate_at_k, ndcg_at_k, target_ranks
from interactions.sequences import EvalCase
from ranker.data import ItemVocabulary, build_training_tensors, histories_to_array, shuffled_batches
from ranker.dismissals import batch_unlikelihood, dismissal_targets
from ranker.ensemble import RankingModel
from ranker.loss import full_softmax_cross_entropy
from ranker.model import PAD, SASRec, SASRecConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 200
    batch_size: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 5  # validations without improvement before stopping
    validate_every: int = 1  # epochs
    max_minutes: float | None = None  # wall-clock budget; the best model so far is kept
    # "constant", or "cosine": decays to 0 over `epochs` (set epochs to the budget)
    lr_schedule: str = "constant"
    dismissal_weight: float = 1.0  # λ of the unlikelihood term (``ranker.dismissals``), if any
    seed: int = 0
    progress: bool = True


@dataclass
class TrainResult:
    model: SASRec
    vocab: ItemVocabulary
    best_epoch: int
    best_validation_ndcg10: float
    best_validation_hr10: float
    epochs_run: int
    train_seconds: float
    stopped_because: str
    curve: list[dict[str, float]] = field(default_factory=list)  # per validation: epoch, loss, ndcg

    def metadata(self, train_config: TrainConfig) -> dict[str, object]:
        return {
            "best_epoch": self.best_epoch,
            "best_validation_ndcg10": self.best_validation_ndcg10,
            "best_validation_hr10": self.best_validation_hr10,
            "epochs_run": self.epochs_run,
            "train_seconds": self.train_seconds,
            "stopped_because": self.stopped_because,
            "train_config": asdict(train_config),
            "curve": self.curve,
        }


@torch.inference_mode()
def score_all_items(
    model: RankingModel,
    vocab: ItemVocabulary,
    histories: Sequence[Sequence[str]],
    batch_size: int = 256,
) -> np.ndarray:
    """(N, len(vocab)) logits of every known item for each history; column j = vocab item j.

    Items in the history are NOT filtered here (the caller decides)."""
    was_training = model.training
    model.eval()
    arrays = histories_to_array(histories, vocab, model.max_length)
    out = np.empty((len(histories), len(vocab)), dtype=np.float32)
    for start in range(0, len(histories), batch_size):
        batch = torch.from_numpy(arrays[start : start + batch_size])
        out[start : start + batch_size] = model.item_logits(model.user_vectors(batch)).numpy()
    model.train(was_training)
    return out


def validation_ranks(
    model: RankingModel, vocab: ItemVocabulary, cases: Sequence[EvalCase]
) -> np.ndarray:
    """Rank of each case's target against all known items, the history's items filtered out.

    Requests whose history holds no item the model knows are left out: serving answers those
    with the popularity fallback, so they say nothing about which epoch of the model is best.
    """
    warm = [c for c in cases if any(i in vocab for i in c.history)]
    cases = warm or list(cases)
    scores = score_all_items(model, vocab, [c.history for c in cases])
    for row, case in enumerate(cases):
        seen = [vocab.index(i) - 1 for i in case.history if i in vocab]
        scores[row, seen] = -np.inf
    targets = np.array([vocab.index(c.target) - 1 for c in cases], dtype=np.int64)  # -1 = unknown
    return target_ranks(scores, targets)


def validation_metrics(
    model: RankingModel, vocab: ItemVocabulary, cases: Sequence[EvalCase]
) -> tuple[float, float]:
    """NDCG@10 and HR@10 on validation requests (``validation_ranks``): what training selects
    on, and what an ensemble of trained models is measured by (``ranker.fit``)."""
    ranks = validation_ranks(model, vocab, cases)
    return ndcg_at_k(ranks, 10), hit_rate_at_k(ranks, 10)


LR_SCHEDULES = ("constant", "cosine")


def learning_rate_schedule(
    optimizer: torch.optim.Optimizer, tc: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-step learning-rate schedule: constant, or cosine decay to 0 over all ``epochs``.

    A decay that ends with the run is what a fixed compute budget wants: the last epochs take
    small steps instead of jittering around the optimum at the full rate.
    """
    if tc.lr_schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    if tc.lr_schedule == "cosine":
        total = max(1, tc.epochs * steps_per_epoch)
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
        )
    raise ModelError(f"unknown lr_schedule {tc.lr_schedule!r}; choose from {LR_SCHEDULES}")


def train_sasrec(
    train_sequences: Mapping[str, Sequence[str]],
    validation: Sequence[EvalCase],
    model_config: Mapping[str, Any] | None = None,
    train_config: TrainConfig | None = None,
    dismissals: Mapping[str, Sequence[tuple[int, str]]] | None = None,
) -> TrainResult:
    """Fit a SASRec on ``train_sequences``; keep the state with the best validation NDCG@10.

    With no ``validation`` requests (a re-fit whose epoch count was chosen on validation before),
    it trains ``epochs`` epochs and keeps the last state; the validation figures are NaN.
    ``dismissals`` (``Split.train_dismissals``) add the unlikelihood term of ``ranker.dismissals``
    with weight ``dismissal_weight``; dismissed items join the vocabulary.
    """
    tc = train_config or TrainConfig()
    torch.manual_seed(tc.seed)
    rng = np.random.default_rng(tc.seed)
    dismissed_items = [[item for _, item in d] for d in (dismissals or {}).values()]
    vocab = ItemVocabulary.from_sequences([*train_sequences.values(), *dismissed_items])
    if len(vocab) == 0:
        raise ModelError("no training items: the training split is empty")
    config = SASRecConfig(n_items=len(vocab), **(model_config or {}))
    tensors = build_training_tensors(train_sequences, vocab, config.max_length)
    if len(tensors.inputs) == 0:
        raise ModelError("no training sequence has two or more items")
    model = SASRec(config)
    dismissed = (
        dismissal_targets(train_sequences, dismissals, vocab, config.max_length)
        if dismissals
        else None
    )
    optimizer = torch.optim.Adam(
        model.parameters(), lr=tc.learning_rate, weight_decay=tc.weight_decay
    )
    scheduler = learning_rate_schedule(
        optimizer, tc, steps_per_epoch=math.ceil(len(tensors.inputs) / tc.batch_size)
    )
    inputs, targets = torch.from_numpy(tensors.inputs), torch.from_numpy(tensors.targets)

    started = time.perf_counter()
    best_state: dict[str, Any] | None = copy.deepcopy(model.state_dict())
    best_ndcg, best_hr, best_epoch = -1.0, 0.0, 0
    stale, epoch, stopped, curve = 0, 0, "max epochs", []
    bar = tqdm(range(1, tc.epochs + 1), desc="train sasrec", disable=not tc.progress)
    for epoch in bar:
        model.train()
        losses = []
        for rows in shuffled_batches(len(inputs), tc.batch_size, rng):
            idx = torch.from_numpy(rows)
            hidden = model(inputs[idx])  # (B, L, H)
            labels = targets[idx]  # (B, L)
            mask = labels != PAD
            # full softmax over every real item
            loss = full_softmax_cross_entropy(hidden[mask], model.output_items(), labels[mask] - 1)
            if dismissed is not None:
                negative = batch_unlikelihood(hidden, model.output_items(), dismissed, rows)
                if negative is not None:
                    loss = loss + tc.dismissal_weight * negative
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
        mean_loss = float(np.mean(losses))
        elapsed_min = (time.perf_counter() - started) / 60
        if not validation:
            curve.append({"epoch": epoch, "loss": mean_loss, "minutes": elapsed_min})
            bar.set_postfix(loss=f"{mean_loss:.3f}")
            log.info("epoch %d loss %.4f (no validation: fixed epochs)", epoch, mean_loss)
            best_state, best_ndcg, best_hr, best_epoch = None, float("nan"), float("nan"), epoch
        elif epoch % tc.validate_every == 0 or epoch == tc.epochs:
            ndcg, hr = validation_metrics(model, vocab, validation)
            curve.append(
                {
                    "epoch": epoch,
                    "loss": mean_loss,
                    "val_ndcg10": ndcg,
                    "val_hr10": hr,
                    "minutes": elapsed_min,
                }
            )
            bar.set_postfix(
                loss=f"{mean_loss:.3f}",
                val_ndcg10=f"{ndcg:.4f}",
                best=f"{max(best_ndcg, ndcg):.4f}",
            )
            log.info("epoch %d loss %.4f val NDCG@10 %.4f HR@10 %.4f", epoch, mean_loss, ndcg, hr)
            if ndcg > best_ndcg:
                best_state, best_ndcg, best_hr, best_epoch, stale = (
                    copy.deepcopy(model.state_dict()),
                    ndcg,
                    hr,
                    epoch,
                    0,
                )
            else:
                stale += 1
                if stale >= tc.patience:
                    stopped = f"early stop: no validation gain in {tc.patience} checks"
                    break
        if tc.max_minutes is not None and elapsed_min >= tc.max_minutes:
            stopped = f"time budget of {tc.max_minutes} min"
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return TrainResult(
        model=model,
        vocab=vocab,
        best_epoch=best_epoch,
        best_validation_ndcg10=best_ndcg,
        best_validation_hr10=best_hr,
        epochs_run=epoch,
        train_seconds=time.perf_counter() - started,
        stopped_because=stopped,
        curve=curve,
    )
