"""``aether bench WHAT``: the benchmarks registered in ``benchmarks.BENCHMARKS``."""

from __future__ import annotations

import argparse
import importlib

from benchmarks import BENCHMARKS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="run a benchmark and print its figures")
    benches = parser.add_subparsers(dest="bench", required=True, metavar="WHAT")
    for name, (module_name, help_text) in BENCHMARKS.items():
        module = importlib.import_module(module_name)
        sub = benches.add_parser(name, help=help_text, description=module.__doc__)
        module.add_arguments(sub)
        sub.set_defaults(func=module.command)
