"""``aether stack up | down | status``: the embedded default stack on loopback.

    aether stack up              # start what is missing, create topics, write .aether/stack.env
    aether stack up --probe --json artifacts/stack.json   # also time a consumer-group join
    aether stack status          # each service, its address, and whether it answers
    aether stack down            # stop exactly what `up` started

Other commands read ``.aether/stack.env`` themselves; a shell can too:
``set -a; . .aether/stack.env; set +a``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from core.settings import load_settings
from stack.embedded import EmbeddedStack, ServiceInfo


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("stack", help="start, inspect or stop the embedded stack")
    actions = parser.add_subparsers(dest="stack_command", required=True, metavar="ACTION")

    up = actions.add_parser("up", help="start missing services, create topics, write stack.env")
    up.add_argument(
        "--probe",
        action="store_true",
        help="also time produce + a fresh consumer group's first message",
    )
    up.add_argument("--no-features", action="store_true", help="do not apply the Feast repo")
    up.add_argument(
        "--json",
        type=Path,
        default=None,
        help="write the measured start-up figures as one flat JSON object here",
    )
    up.set_defaults(func=_up)

    down = actions.add_parser("down", help="stop the processes `stack up` started")
    down.set_defaults(func=_down)

    status = actions.add_parser("status", help="show each service and whether it answers")
    status.set_defaults(func=_status)

    for action in (up, down, status):
        action.add_argument(
            "--data-dir",
            type=Path,
            default=None,
            help="where stack.env, stack.json and logs/ live (default: .aether)",
        )


def _stack(args: argparse.Namespace) -> EmbeddedStack:
    return EmbeddedStack(load_settings(), data_dir=args.data_dir)


def _print_services(services: list[ServiceInfo]) -> None:
    for info in services:
        state = "answers" if info.answers else "NOT ANSWERING"
        if info.origin == "hook":
            state = "-"  # a one-off action at `up`, nothing that answers later
        pid = f" pid={info.pid}" if info.pid else ""
        detail = f"  ({info.detail})" if info.detail else ""
        print(f"{info.name:<7} {info.origin:<9} {state:<13} {_redact(info.address)}{pid}{detail}")


def _redact(address: str) -> str:
    """Hide a password in ``redis://user:secret@host`` before printing."""
    scheme, sep, rest = address.partition("://")
    if sep and "@" in rest:
        credentials, _, host = rest.rpartition("@")
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return address


def _up(args: argparse.Namespace) -> int:
    stack = _stack(args)
    info = stack.up(probe=args.probe, apply_features=not args.no_features)
    _print_services(list(info.services.values()))
    print(f"topics  {', '.join(info.topics)}")
    for name, seconds in info.timings_s.items():
        print(f"timing  {name} = {seconds:.3f} s")
    print(f"wrote {info.env_path}  (shell: set -a; . {info.env_path}; set +a)")
    if args.json is not None:
        from aether.cli.common import machine_description, write_json

        figures: dict[str, object] = {
            "namespace": info.namespace,
            "partitions": stack.settings.kafka.partitions,
            "session_timeout_ms": stack.settings.kafka.session_timeout_ms,
            "machine": machine_description(),
        }
        figures.update({f"{name}_origin": s.origin for name, s in info.services.items()})
        figures.update(info.timings_s)
        write_json(args.json, figures)
    return 0


def _down(args: argparse.Namespace) -> int:
    stopped = _stack(args).down()
    if not stopped:
        print("nothing to stop: no stack state found")
    for name, outcome in stopped.items():
        print(f"{name:<7} {outcome}")
    return 0


def _status(args: argparse.Namespace) -> int:
    services = _stack(args).status()
    _print_services(services)
    return 0 if all(info.answers for info in services if info.origin != "hook") else 1
