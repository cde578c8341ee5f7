"""``aether demo``: the closed-loop demo on the embedded stack (see ``aether.demo``)."""

from __future__ import annotations

import argparse
import sys

from aether.cli.common import add_dataset_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="closed-loop demo on the embedded stack")
    add_dataset_args(parser)
    parser.add_argument(
        "--users",
        type=int,
        default=12,
        help="users in the closed loop (the other warm users are the headline's)",
    )
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument(
        "--drift-round",
        type=int,
        default=3,
        help="the round whose feedback is all dismissals, an injected drift (0: none)",
    )
    parser.add_argument(
        "--no-hold",
        action="store_true",
        help="exit after the loop (default in a terminal: keep the operator page up until Enter)",
    )
    parser.add_argument("-k", type=int, default=10, help="slate size")
    parser.add_argument("--train-minutes", type=float, default=2.0, help="ranker training budget")
    parser.add_argument(
        "--retrain-after",
        type=int,
        default=2,
        help="round after which the ranker is retrained from the worker's log and promoted "
        "(0: never)",
    )
    parser.add_argument(
        "--retrain-minutes", type=float, default=1.0, help="budget of the retraining from the log"
    )
    parser.add_argument(
        "--no-headline",
        action="store_true",
        help="skip the live-vs-frozen headline (docs/benchmarks/live.md §3)",
    )
    parser.add_argument("--namespace", default="demo", help="deployment namespace of the demo")
    parser.add_argument("--keep-stack", action="store_true", help="leave the stack running")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from aether.demo import DemoConfig, run_demo
    from core.settings import load_settings
    from stack.embedded import EmbeddedStack

    # pymilvus warns on routine client-side decisions (iterator timestamps, reconnects) that
    # the demo's reader cannot act on; its errors still show.
    logging.getLogger("pymilvus").setLevel(logging.ERROR)
    stack = EmbeddedStack(load_settings(namespace=args.namespace))
    info = stack.up()
    print(f"stack up: {', '.join(f'{n}={s.address}' for n, s in info.services.items())}")
    try:
        settings = stack.stack_settings(
            info.env["KAFKA_BOOTSTRAP_SERVERS"],
            info.env["REDIS_URL"],
            info.env.get("MILVUS_URI") or info.env["AETHER_MILVUS__URI"],
        )
        config = DemoConfig(
            dataset=args.dataset,
            data=args.data,
            users=args.users,
            rounds=args.rounds,
            drift_round=args.drift_round,
            hold=sys.stdin.isatty() and not args.no_hold,
            k=args.k,
            train_minutes=args.train_minutes,
            retrain_after=args.retrain_after,
            retrain_minutes=args.retrain_minutes,
            headline=not args.no_headline,
        )
        run_demo(settings, config)
    finally:
        if not args.keep_stack:
            stack.down()
    return 0
