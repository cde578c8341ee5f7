"""The ``aether`` command line: one thin module per subcommand group.

Each module in ``COMMAND_MODULES`` exposes ``register(subparsers)`` which adds its subcommand(s)
and sets ``func`` on the parser; ``func(args) -> int`` is the exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

import core.metrics_exporter  # noqa: F401  - first: keeps Feast from switching prometheus_client to multiprocess mode
from core.errors import AetherError
from stack.env_file import load_stack_env

COMMAND_MODULES: tuple[str, ...] = (
    "demo",
    "stack",
    "worker",
    "replay",
    "index",
    "registry",
    "train",
    "ensemble",
    "eval",
    "serve",
    "dashboard",
    "ope",
    "experiments",
    "bench",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aether", description="AetherRec: streaming, real-time personalization."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"aether.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    load_stack_env()  # talk to the stack `aether stack up` started, unless the env says otherwise
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except AetherError as exc:
        print(f"aether {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
