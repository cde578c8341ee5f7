"""The server child of ``aether bench live`` (``benchmarks.live_stack.start_server``).

``aether serve``'s server (``serving.processes.run_server``, one process) for the deployment in
the environment, pinned to the ranker checkpoint given and the embeddings file the benchmark
indexed, re-reading the catalogue every ``--refresh-s`` seconds as ``aether serve`` does (0: never),
with its Prometheus endpoint on ``--metrics-port`` (``benchmarks.serve_server.BenchWorker``).

``--clock-file``: serving time is the replay's event time, read from that file on each request
(``benchmarks.replay_clock.FileClock``), not the wall clock. Impressions stamped in 2026 beside
replayed events of 2000–2003 would put reward attribution's watermark decades ahead: no slot
would ever be decided and the worker's attribution state would grow with every request
(docs/benchmarks/live.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.replay_clock import FileClock
from benchmarks.serve_server import BenchWorker


def main(argv: list[str] | None = None) -> int:
    from core.settings import load_settings
    from serving.processes import WorkerOptions

    parser = argparse.ArgumentParser(prog="python -m benchmarks.live_server")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--refresh-s", type=float, default=5.0)
    parser.add_argument("--clock-file", type=Path, help="serving time from this file (FileClock)")
    args = parser.parse_args(argv)
    settings = load_settings()
    serving = settings.serving.model_copy(update={"port": args.port, "processes": 1})
    settings = settings.model_copy(update={"serving": serving})
    options = WorkerOptions(
        checkpoint=args.checkpoint,
        refresh_s=args.refresh_s or None,
        grace_s=2.0,
        clock_ms=FileClock(args.clock_file) if args.clock_file else None,
    )
    worker = BenchWorker(metrics_ports=(args.metrics_port,), reuse_port=False)
    worker(settings, 0, options, lambda: None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
