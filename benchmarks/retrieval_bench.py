"""``aether bench retrieval``: ANN latency/recall vs exact search, and candidate recall on ML-1M.

Wire it as a subcommand with ``add_arguments(parser)`` and ``parser.set_defaults(func=run)``.
The ``--json`` file is one flat object; figures that were not measured are ``null`` with a
``*_status`` string saying why (e.g. a 1M build projected past the time budget).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.machine import machine_description

SIZE_LABELS = {10_000: "10k", 100_000: "100k", 1_000_000: "1m"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", default=None, help="write the flat figures here")
    parser.add_argument("--dataset", default="ml-1m", choices=("ml-latest-small", "ml-1m"))
    parser.add_argument("--data", default=None, help="dataset folder (default: its usual place)")
    parser.add_argument("--sizes", default="10000,100000,1000000", help="ANN index sizes")
    parser.add_argument("--ks", default="100,500")
    parser.add_argument("--queries", type=int, default=200, help="search calls per (size, k)")
    parser.add_argument(
        "--clusters", type=int, default=256, help="centres of the synthetic vectors"
    )
    parser.add_argument("--nprobe", type=int, default=32)
    parser.add_argument(
        "--index-type",
        default="auto",
        choices=("auto", "IVF_FLAT", "FLAT", "AUTOINDEX", "HNSW"),
        help="auto (what `aether index` builds): FLAT up to 200k items, IVF_FLAT above; "
        "HNSW needs a Milvus server (Milvus Lite refuses to build it)",
    )
    server = parser.add_mutually_exclusive_group()
    server.add_argument(
        "--milvus-uri",
        default=None,
        help="run the ANN part against this Milvus server (http://host:port) instead of "
        "Milvus Lite files; its bench collections are dropped afterwards",
    )
    server.add_argument(
        "--milvus-server",
        action="store_true",
        help="start the embedded Milvus 2.3.5 server (`milvus` wheel, dev extra) for the ANN part",
    )
    parser.add_argument(
        "--build-budget-s",
        type=float,
        default=1800.0,
        help="skip a size whose projected build time exceeds this (reported, not faked)",
    )
    parser.add_argument("--candidates", type=int, default=200, help="merged candidate count")
    parser.add_argument(
        "--users", type=int, default=None, help="sample this many users (default all)"
    )
    parser.add_argument("--no-content", action="store_true", help="skip the MiniLM content source")
    parser.add_argument(
        "--ranker-checkpoint",
        default=None,
        help="also measure ANN recall with the SASRec ranker's item embeddings and encode_user "
        "(a checkpoint trained without each user's last item)",
    )
    parser.add_argument(
        "--tune-plan",
        action="store_true",
        help="choose the fusion plan (slots and weights) on validation items (second-to-last) "
        "before reporting the held-out last items",
    )
    parser.add_argument("--skip-ann", action="store_true")
    parser.add_argument("--skip-recall", action="store_true")
    parser.add_argument(
        "--workdir", default=None, help="where Milvus Lite files go (default: a temp dir)"
    )
    parser.add_argument("--seed", type=int, default=0)


def command(args: argparse.Namespace) -> int:
    from benchmarks.retrieval_measures import candidate_recall
    from retrieval.index import IndexConfig

    figures: dict[str, Any] = {"machine": machine_description()}
    ks = [int(k) for k in args.ks.split(",")]
    sizes = [int(n) for n in args.sizes.split(",")]
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="aether-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    config = IndexConfig(index_type=args.index_type, nprobe=args.nprobe)
    params = (
        f"M={config.hnsw_m} efConstruction={config.hnsw_ef_construction} ef=max({config.hnsw_ef}, k)"
        if args.index_type == "HNSW"
        else f"nlist=auto(<=1024) nprobe={args.nprobe}"
    )
    figures["ann_index"] = (
        f"{args.index_type} {params}, inner product, 64-d, {args.clusters} clusters"
    )
    if not args.skip_ann:
        with _ann_backend(args, workdir) as backend:
            figures["ann_backend"] = (
                "Milvus Lite" if backend is None else f"Milvus server {backend}"
            )
            _ann_figures(args, workdir, backend, ks, sizes, config, figures)
    if not args.skip_recall:
        started = time.perf_counter()
        recall = candidate_recall(
            args.dataset,
            args.data,
            str(workdir / "recall.db"),
            k=args.candidates,
            max_users=args.users,
            seed=args.seed,
            with_content=not args.no_content,
            tune_plan=args.tune_plan,
        )
        tag = args.dataset.replace("-", "").replace("mllatestsmall", "mlsmall")
        figures[f"candidate_recall_{tag}_merged"] = round(recall.merged, 4)
        for name, value in recall.per_source.items():
            figures[f"candidate_recall_{tag}_{name}"] = round(value, 4)
        figures[f"candidate_recall_{tag}_users"] = recall.users
        figures[f"candidate_recall_{tag}_k"] = recall.k
        figures[f"candidate_recall_{tag}_cold_targets"] = recall.cold_targets
        _plan_figures(recall, f"candidate_recall_{tag}", figures)
        figures["candidate_recall_s"] = round(time.perf_counter() - started, 1)
        if args.ranker_checkpoint:
            _ranker_recall(args, workdir, tag, figures)
        print(
            f"candidate recall@{recall.k} on {args.dataset} ({recall.users} users, last item held out): "
            + ", ".join(f"{n} {v:.4f}" for n, v in recall.per_source.items())
            + f", merged {recall.merged:.4f} (plan {recall.plan})"
        )
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


@contextlib.contextmanager
def _ann_backend(args: argparse.Namespace, workdir: Path) -> Iterator[str | None]:
    """The server URI the ANN part runs against, or None for Milvus Lite files."""
    if args.milvus_server:
        from retrieval.milvus_lite import embedded_milvus_server

        with embedded_milvus_server(workdir / "milvus-server") as uri:
            yield uri
    else:
        yield args.milvus_uri


def _ann_figures(
    args: argparse.Namespace,
    workdir: Path,
    backend: str | None,
    ks: list[int],
    sizes: list[int],
    config: Any,
    figures: dict[str, Any],
) -> None:
    """Build and search one index per size; a size projected past the build budget is skipped."""
    from benchmarks.retrieval_measures import ann_benchmark
    from retrieval.milvus_lite import drop_collections

    seconds_per_item: float | None = None
    for n in sorted(sizes):
        label = SIZE_LABELS.get(n, str(n))
        projected = seconds_per_item * n if seconds_per_item else None
        if seconds_per_item and projected is not None and projected > args.build_budget_s:
            figures[f"ann_{label}_status"] = (
                f"skipped: projected build {projected:.0f} s > budget {args.build_budget_s:.0f} s "
                f"(from the measured {1 / seconds_per_item:.0f} items/s)"
            )
            for k in ks:
                figures[f"ann_p50_ms_{label}_k{k}"] = None
                figures[f"ann_p99_ms_{label}_k{k}"] = None
                figures[f"ann_recall_{label}_k{k}"] = None
            print(f"ANN n={n}: {figures[f'ann_{label}_status']}")
            continue
        uri = backend or str(workdir / f"ann_{label}.db")
        prefix = f"bench{uuid.uuid4().hex[:8]}"
        try:
            result = ann_benchmark(
                uri,
                n,
                ks=ks,
                queries=args.queries,
                config=config,
                clusters=args.clusters,
                seed=args.seed,
                alias=f"{prefix}_items",
            )
        finally:
            if backend is None:
                (workdir / f"ann_{label}.db").unlink(missing_ok=True)
            else:
                drop_collections(backend, prefix)
        seconds_per_item = result.build_s / n
        figures[f"ann_index_type_{label}"] = config.resolve_index_type(n)
        figures[f"ann_build_s_{label}"] = round(result.build_s, 1)
        for k in ks:
            figures[f"ann_p50_ms_{label}_k{k}"] = round(result.p50_ms[k], 3)
            figures[f"ann_p99_ms_{label}_k{k}"] = round(result.p99_ms[k], 3)
            figures[f"ann_recall_{label}_k{k}"] = round(result.recall[k], 4)
            print(
                f"ANN n={n} k={k}: p50 {result.p50_ms[k]:.2f} ms, p99 {result.p99_ms[k]:.2f} ms, "
                f"recall@{k} vs exact {result.recall[k]:.4f} (build {result.build_s:.0f} s)"
            )


def _ranker_recall(
    args: argparse.Namespace, workdir: Path, tag: str, figures: dict[str, Any]
) -> None:
    """Same split and merge, with the ranker's item embeddings in Milvus and its user encoder."""
    from benchmarks.retrieval_measures import candidate_recall
    from ranker.scoring import SASRecRanker

    ranker = SASRecRanker.from_checkpoint(args.ranker_checkpoint)
    recall = candidate_recall(
        args.dataset,
        args.data,
        str(workdir / "recall_ranker.db"),
        k=args.candidates,
        max_users=args.users,
        seed=args.seed,
        with_content=not args.no_content,
        item_embeddings=ranker.item_embeddings(),
        encoder=ranker,
        tune_plan=args.tune_plan,
    )
    for name, value in recall.per_source.items():
        figures[f"candidate_recall_{tag}_{name}_ranker"] = round(value, 4)
    figures[f"candidate_recall_{tag}_merged_ranker"] = round(recall.merged, 4)
    figures[f"candidate_recall_{tag}_ranker_model_version"] = ranker.model_version
    _plan_figures(recall, f"candidate_recall_{tag}_ranker", figures)
    print(
        f"with the ranker's encoder ({ranker.model_version}): "
        + ", ".join(f"{n} {v:.4f}" for n, v in recall.per_source.items())
        + f", merged {recall.merged:.4f} (plan {recall.plan})"
    )


def _plan_figures(recall: Any, prefix: str, figures: dict[str, Any]) -> None:
    """The plan used, and, when it was chosen on validation items, how it scored there."""
    figures[f"{prefix}_plan"] = ",".join(
        f"{n}:reserved={r}/weight={w}" for n, (r, w) in recall.plan.items()
    )
    if recall.validation_merged is not None:
        figures[f"{prefix}_plan_validation_merged"] = round(recall.validation_merged, 4)
        figures[f"{prefix}_plans_compared"] = recall.plans_compared
