"""The Feast hook of `stack up` and the `aether stack` command-line wiring (no services)."""

from __future__ import annotations

import argparse
import sys
import types

import pytest

from aether.cli import stack as stack_cli
from core.settings import Settings
from stack.embedded import apply_feature_repo


def test_feast_hook_calls_features_store_apply_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[object, ...]] = []
    fake_store = types.ModuleType("features.store")
    fake_store.apply_repo = lambda *args: calls.append(args)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "features.store", fake_store)
    settings = Settings(namespace="hooktest")

    detail = apply_feature_repo(settings)

    assert calls == [(settings.redis, settings.deployment)]
    assert detail.startswith("applied") and "hooktest" in detail


def test_feast_hook_skips_when_the_store_has_no_apply_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "features.store", types.ModuleType("features.store"))

    assert apply_feature_repo(Settings()).startswith("skipped")


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="aether")
    stack_cli.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(list(argv))


def test_cli_registers_up_down_status() -> None:
    up = _parse("stack", "up", "--probe", "--no-features", "--data-dir", "/tmp/x")
    assert up.func is stack_cli._up
    assert up.probe and up.no_features and str(up.data_dir) == "/tmp/x"
    assert _parse("stack", "down").func is stack_cli._down
    assert _parse("stack", "status").func is stack_cli._status


@pytest.mark.parametrize(
    ("address", "shown"),
    [
        ("redis://:s3cret@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://user:pw@host/0", "redis://user:***@host/0"),
        ("127.0.0.1:9092", "127.0.0.1:9092"),
    ],
)
def test_printed_addresses_hide_passwords(address: str, shown: str) -> None:
    assert stack_cli._redact(address) == shown
