"""``aether bench WHAT``: the benchmarks registered in ``benchmarks.BENCHMARKS``.

A benchmark's module is imported only when it is the one chosen (``aether.cli.lazy``): the table
gives ``aether bench --help`` its listing, and most benchmarks import what they measure.
"""

from __future__ import annotations

import argparse
import importlib
from functools import partial

from aether.cli.lazy import LazySubcommands, lazy_subcommands
from benchmarks import BENCHMARKS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="run a benchmark and print its figures")
    benches = lazy_subcommands(parser, dest="bench", required=True, metavar="WHAT")
    for name, (_, help_text) in BENCHMARKS.items():
        benches.add_lazy(name, help=help_text, load=partial(_register, benches, name))


def _register(benches: LazySubcommands, name: str) -> None:
    module_name, help_text = BENCHMARKS[name]
    module = importlib.import_module(module_name)
    sub = benches.add_parser(name, help=help_text, description=module.__doc__)
    module.add_arguments(sub)
    sub.set_defaults(func=module.command)
