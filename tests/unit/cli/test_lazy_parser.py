"""``aether`` builds a subcommand's parser only when it is chosen, and reads exactly as if every
parser had been built: same help for every command path, same errors, same parsed arguments."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from aether.cli import COMMANDS, build_parser
from aether.cli.lazy import LazySubcommands


def _subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def _load_everything(parser: argparse.ArgumentParser) -> None:
    commands = _subcommands(parser)
    if commands is None:
        return
    if isinstance(commands, LazySubcommands):
        for name in list(commands.choices):
            commands.load(name)
    for sub in commands.choices.values():
        _load_everything(sub)


def _paths(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[str, ...]]:
    yield prefix
    commands = _subcommands(parser)
    if commands is not None:
        for name, sub in commands.choices.items():
            yield from _paths(sub, (*prefix, name))


def _parser_at(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> argparse.ArgumentParser:
    for name in path:
        commands = _subcommands(parser)
        assert commands is not None
        parser = commands.choices[name]
    return parser


def _run(argv: list[str]) -> str:
    """What ``aether ARGV`` prints when parsing (a fresh, lazy parser), and how it exits."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exit_:
            return f"{out.getvalue()}exit {exit_.code}"
    return out.getvalue() + repr(sorted((k, repr(v)) for k, v in vars(args).items() if k != "func"))


@pytest.fixture(scope="module")
def eager() -> argparse.ArgumentParser:
    parser = build_parser()
    _load_everything(parser)
    return parser


@pytest.fixture(autouse=True)
def fixed_width(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")


def test_every_module_registers_its_commands_with_the_listed_help(
    eager: argparse.ArgumentParser,
) -> None:
    commands = _subcommands(eager)
    assert commands is not None
    listed = {action.dest: action.help for action in commands._choices_actions}
    assert listed == {name: help_text for name, (_, help_text) in COMMANDS.items()}
    assert list(commands.choices) == list(COMMANDS)


def test_help_of_every_command_path_reads_as_if_every_parser_were_built(
    eager: argparse.ArgumentParser,
) -> None:
    paths = list(_paths(eager))
    assert ("registry", "list") in paths and ("bench", "features") in paths
    for path in paths:
        expected = _parser_at(eager, path).format_help()
        assert _run([*path, "--help"]) == f"{expected}exit 0", path


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["bogus"],
        ["registry"],
        ["registry", "bogus"],
        ["registry", "list", "--bogus"],
        ["bench", "bogus"],
        ["recommend", "--user", "u1", "-k", "3"],
        ["-v", "registry", "list", "--json"],
        ["stack", "up"],
    ],
)
def test_errors_and_arguments_are_those_of_the_built_parser(
    eager: argparse.ArgumentParser, argv: list[str]
) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            args = eager.parse_args(argv)
        except SystemExit as exit_:
            expected = f"{out.getvalue()}exit {exit_.code}"
        else:
            expected = out.getvalue() + repr(
                sorted((k, repr(v)) for k, v in vars(args).items() if k != "func")
            )
    assert _run(argv) == expected


PROBE = """
import json, sys
from aether.cli import build_parser
build_parser().parse_args(sys.argv[1:])
print(json.dumps(sorted(m for m in ("torch", "feast", "pymilvus", "faust") if m in sys.modules)))
"""


@pytest.mark.parametrize("argv", [["registry", "list"], ["stack", "status"]])
def test_a_light_command_imports_no_heavy_library(argv: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
