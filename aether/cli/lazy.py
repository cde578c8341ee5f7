"""Subcommands whose parsers are built only when chosen.

A subcommand's parser needs its module, and many modules import the heavy libraries they drive
(PyTorch, Feast, Milvus, the dashboard server): building every parser would make each ``aether``
process — ``aether registry list --help`` as much as ``aether train`` — pay for all of them.
``aether --help`` needs only each subcommand's name and one-line help, so a lazy subcommand is
first added as a *stub* (name and help, no arguments); when the command line names it, ``load``
builds the real parser, which takes the stub's place in the listing, and parsing goes on there.
Every help text and error reads as with eagerly built parsers (``tests/unit/cli``).

    commands = lazy_subcommands(parser, dest="command", metavar="COMMAND")
    commands.add_lazy("train", help="train the ranker", load=lambda: train.register(commands))

``load`` must add the parser under the same name (it may add siblings that also have stubs, as
``aether.cli.serve`` adds ``serve`` and ``recommend``; each then loads once).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    _SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]
else:  # not subscriptable at run time
    _SubParsers = argparse._SubParsersAction


def lazy_subcommands(parser: argparse.ArgumentParser, **kwargs: Any) -> LazySubcommands:
    """``parser.add_subparsers(**kwargs)``, with ``add_lazy``."""
    commands = parser.add_subparsers(action=LazySubcommands, **kwargs)
    assert isinstance(commands, LazySubcommands)
    return commands


class LazySubcommands(_SubParsers):
    """Subparsers with ``add_lazy`` (made by ``lazy_subcommands``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._loaders: dict[str, Callable[[], None]] = {}

    def add_lazy(self, name: str, *, help: str, load: Callable[[], None]) -> None:
        """A stub parser for ``name`` (listed with ``help``); ``load()`` adds the real one."""
        self.add_parser(name, help=help)
        self._loaders[name] = load

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        replaces_stub = self._loaders.pop(name, None) is not None
        order = list(self._name_parser_map)
        if replaces_stub:
            del self._name_parser_map[name]  # argparse refuses a name twice
        parser = super().add_parser(name, **kwargs)
        if replaces_stub:
            # Keep the choices (the same dict: error messages list it) in their order.
            parsers = dict(self._name_parser_map)
            self._name_parser_map.clear()
            self._name_parser_map.update((key, parsers[key]) for key in order)
            # The real parser's listing entry (appended last, if it has help) takes the stub's place.
            at = next(i for i, action in enumerate(self._choices_actions) if action.dest == name)
            if "help" in kwargs:
                self._choices_actions[at] = self._choices_actions.pop()
            else:
                del self._choices_actions[at]
        return parser

    def load(self, name: str) -> None:
        """Build ``name``'s real parser now, if it is still a stub."""
        loader = self._loaders.get(name)
        if loader is not None:
            loader()
            if name in self._loaders:
                raise RuntimeError(f"loading subcommand {name!r} did not add its parser")

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        assert isinstance(values, list)  # nargs=PARSER: the command, then its arguments
        self.load(values[0])
        super().__call__(parser, namespace, values, option_string)
