"""Argument helpers shared by subcommands: dataset options and --json output.

Settings: `aether.cli.main` exports `.aether/stack.env` first, so subcommands call
`core.settings.load_settings()`.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path

from benchmarks.machine import machine_description  # noqa: F401 - re-exported for subcommands
from benchmarks.output import write_json  # noqa: F401 - re-exported for subcommands


def add_dataset_args(parser: argparse.ArgumentParser, default: str = "ml-latest-small") -> None:
    parser.add_argument(
        "--dataset",
        default=default,
        choices=("ml-latest-small", "ml-1m", "open-bandit"),
        help=f"dataset name (default: {default})",
    )
    parser.add_argument(
        "--data", type=Path, default=None, help="dataset folder (default: built-in/shared)"
    )


def add_json_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", type=Path, default=None, help="write the figures as one flat JSON object here"
    )


def run_standalone(
    prog: str,
    description: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], int],
    argv: list[str] | None = None,
) -> int:
    """``python -m aether.cli.<module>``: one subcommand without the ``aether`` front end (child
    processes started by tests and benchmarks use it; it reads no ``.aether/stack.env``)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return run(args)
