"""The ``aether`` command line: one thin module per subcommand group.

Each module named in ``COMMANDS`` exposes ``register(subparsers)`` which adds its subcommand(s)
and sets ``func`` on the parser; ``func(args) -> int`` is the exit code. A module is imported only
when its subcommand is chosen (``aether.cli.lazy``): ``COMMANDS`` carries what ``aether --help``
lists, so listing the commands imports none of them.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from functools import partial

import core.metrics_exporter  # noqa: F401  - first: keeps Feast from switching prometheus_client to multiprocess mode
from aether.cli.lazy import LazySubcommands, lazy_subcommands
from core.errors import AetherError
from stack.env_file import load_stack_env

# command -> (its module in aether.cli, its one-line help as the module registers it), in the
# order ``aether --help`` lists them; tests/unit/cli/test_lazy_parser.py checks the help matches.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "closed-loop demo on the embedded stack"),
    "stack": ("stack", "start, inspect or stop the embedded stack"),
    "worker": ("worker", "run the stream worker (Faust agents)"),
    "replay": ("replay", "publish a MovieLens dataset as events"),
    "index": ("index", "build, register and promote a Milvus item index"),
    "registry": ("registry", "the model and index registry"),
    "train": ("train", "train the SASRec ranker and write a checkpoint"),
    "ensemble": ("ensemble", "combine rankers trained on the same split (mean logit)"),
    "eval": ("eval", "offline evaluation of the ranker and baselines"),
    "serve": ("serve", "run the gRPC Recommender service"),
    "recommend": ("serve", "ask the running service for a slate"),
    "dashboard": ("dashboard", "serve the operator page (metrics, drift)"),
    "ope": (
        "ope",
        "off-policy evaluation (Open Bandit) or exploration simulation (MovieLens)",
    ),
    "experiments": ("experiments", "read out the online experiments"),
    "bench": ("bench", "run a benchmark and print its figures"),
}
COMMAND_MODULES: tuple[str, ...] = tuple(dict.fromkeys(module for module, _ in COMMANDS.values()))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aether", description="AetherRec: streaming, real-time personalization."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = lazy_subcommands(parser, dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        subparsers.add_lazy(name, help=help_text, load=partial(_register, module, subparsers))
    return parser


def _register(module: str, subparsers: LazySubcommands) -> None:
    importlib.import_module(f"aether.cli.{module}").register(subparsers)


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
