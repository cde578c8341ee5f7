"""Inference latency of the SASRec ranker on one CPU core.

Measures what serving does per request: score 200 candidates for one user whose history has 200
items (``score200``), p50/p99 over many calls, plus one batch of 64 such users. One thread
(``torch.set_num_threads(1)``) and ``torch.inference_mode`` (inside :class:`SASRecRanker`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from benchmarks.machine import machine_description
from benchmarks.output import print_figures, write_json
from ranker.checkpoint import Checkpoint, load_checkpoint
from ranker.data import ItemVocabulary
from ranker.model import SASRec, SASRecConfig
from ranker.scoring import SASRecRanker


def untrained_checkpoint(n_items: int = 3416, seed: int = 0) -> Checkpoint:
    """A randomly initialised model of ML-1M size: latency does not depend on the weights."""
    torch.manual_seed(seed)
    vocab = ItemVocabulary(tuple(str(i) for i in range(1, n_items + 1)))
    return Checkpoint(SASRec(SASRecConfig(n_items=n_items)).eval(), vocab, "sasrec-untrained")


def measure(
    checkpoint: str | Path | None = None,
    calls: int = 1000,
    batch_users: int = 64,
    history_length: int = 200,
    candidates: int = 200,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, float | str]:
    """Latency figures (milliseconds) of ``SASRecRanker.score`` and ``score_batch``."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ckpt = load_checkpoint(checkpoint) if checkpoint is not None else untrained_checkpoint()
        ranker = SASRecRanker(ckpt)
        items = list(ckpt.vocab.item_ids)
        rng = np.random.default_rng(seed)

        def request() -> tuple[list[str], list[str]]:
            size = history_length + candidates  # distinct items where the catalogue allows
            picks = rng.choice(len(items), size=size, replace=size > len(items))
            return (
                [items[i] for i in picks[:history_length]],
                [items[i] for i in picks[history_length:]],
            )

        requests = [request() for _ in range(calls)]
        for history, cands in requests[:20]:  # warm-up
            ranker.score(history, cands)
        single = []
        for history, cands in tqdm(requests, desc="score200", disable=not progress):
            start = time.perf_counter()
            ranker.score(history, cands)
            single.append((time.perf_counter() - start) * 1000)
        batches = []
        for _ in range(max(5, calls // 100)):
            batch = [request() for _ in range(batch_users)]
            start = time.perf_counter()
            ranker.score_batch([h for h, _ in batch], [c for _, c in batch])
            batches.append((time.perf_counter() - start) * 1000)
        return {
            "score200_p50_ms": float(np.percentile(single, 50)),
            "score200_p99_ms": float(np.percentile(single, 99)),
            "score200_mean_ms": float(np.mean(single)),
            "score200_calls": float(calls),
            "batch64_p50_ms": float(np.percentile(batches, 50)),
            "batch64_p99_ms": float(np.percentile(batches, 99)),
            "batch64_users_per_s": float(batch_users / (np.percentile(batches, 50) / 1000)),
            "bench_threads": 1.0,
            "bench_model_version": ranker.model_version,
        }
    finally:
        torch.set_num_threads(previous_threads)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: a fresh model")
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")


def command(args: argparse.Namespace) -> int:
    figures = {"machine": machine_description(), **measure(args.checkpoint, calls=args.calls)}
    write_json(args.json, figures)
    print_figures(figures)
    return 0
