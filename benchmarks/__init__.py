"""Benchmarks: every one prints its figures and the machine, and ``--json PATH`` writes them as one
flat JSON object. ``aether bench WHAT`` runs them; results, with the commands that produced
them, are kept in ``docs/benchmarks/``.

Each module named in ``BENCHMARKS`` exposes ``add_arguments(parser)`` and ``command(args) -> int``.
Nothing in the library imports this package (import-linter's layers contract): measurements sit
above the code they measure, as river keeps its ``benchmarks/`` outside ``river/``.
"""

from __future__ import annotations

# name -> (module, one-line help)
BENCHMARKS: dict[str, tuple[str, str]] = {
    "ingest": ("benchmarks.ingest", "events/s and freshness through broker + worker"),
    "retrieval": ("benchmarks.retrieval_bench", "ANN latency/recall and candidate recall"),
    "serve": ("benchmarks.serve", "Recommend latency over gRPC under offered load"),
    "ranker": ("benchmarks.ranker_latency", "SASRec scoring latency: 200 candidates, one core"),
    "features": ("benchmarks.feature_store", "online feature store read/write latency"),
    "drift": ("benchmarks.drift", "drift detection delay and false alarms on replayed ML-1M"),
    "drift-steps": ("benchmarks.drift_steps_cost", "CPU per record of the worker's drift monitors"),
    "experiments": ("benchmarks.experiments", "A/A, A/B and interleaving runs: FP rate and power"),
    "dismissals": ("benchmarks.dismissals", "rankers trained with and without dismissals"),
    "lifecycle": ("benchmarks.lifecycle", "new item → recommendable; retrain from log, swap"),
    "live": ("benchmarks.live", "the future replayed through the running system: live vs frozen"),
}
