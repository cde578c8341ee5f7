"""``aether bench <what>``: every benchmark prints its figures and the machine, and ``--json PATH``
writes them as one flat object. Results and the commands that produced them are collected in
``docs/benchmarks/``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from aether.cli import bench_ingest, bench_retrieval
from aether.cli.common import machine_description, write_json
from aether.settings import load_settings
from serving import bench as bench_serve


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="run a benchmark and print its figures")
    benches = parser.add_subparsers(dest="bench", required=True, metavar="WHAT")

    ingest = benches.add_parser("ingest", help="events/s and freshness through broker + worker")
    bench_ingest.add_arguments(ingest)
    ingest.set_defaults(func=bench_ingest.run)

    retrieval = benches.add_parser("retrieval", help="ANN latency/recall and candidate recall")
    bench_retrieval.add_arguments(retrieval)
    retrieval.set_defaults(func=bench_retrieval.run)

    serve = benches.add_parser("serve", help="Recommend latency over gRPC under offered load")
    bench_serve.add_arguments(serve)
    serve.set_defaults(func=bench_serve.run)

    ranker = benches.add_parser("ranker", help="SASRec scoring latency: 200 candidates, one core")
    ranker.add_argument("--checkpoint", type=Path, default=None, help="default: a fresh model")
    ranker.add_argument("--calls", type=int, default=1000)
    ranker.add_argument("--json", type=Path, default=None)
    ranker.set_defaults(func=_ranker)

    features = benches.add_parser("features", help="online feature store read/write latency")
    features.add_argument("--json", type=Path, default=None)
    features.add_argument("--repeats", type=int, default=300)
    features.set_defaults(func=_features)


def _features(args: argparse.Namespace) -> int:
    from features.bench import run

    figures = run(load_settings(), args.json, repeats=args.repeats, machine=machine_description())
    for name, value in sorted(figures.items()):
        print(f"{name:<40} {value:.3f}" if isinstance(value, float) else f"{name:<40} {value}")
    return 0


def _ranker(args: argparse.Namespace) -> int:
    from ranker.bench import run

    figures = {"machine": machine_description(), **run(args.checkpoint, calls=args.calls)}
    write_json(args.json, figures)
    for name, value in sorted(figures.items()):
        print(f"{name:<40} {value:.3f}" if isinstance(value, float) else f"{name:<40} {value}")
    return 0
