"""``stack.env`` parsing and writing: the format every aether command and a shell read."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.errors import ConfigError
from core.subprocesses import split_host_port
from stack.env_file import (
    format_env_text,
    keep_milvus_lite_path_from_pymilvus,
    load_stack_env,
    parse_env_text,
    write_env_file,
)


def test_parse_skips_comments_and_blank_lines_and_accepts_export() -> None:
    text = """
    # written by aether stack up
    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092
    export REDIS_URL=redis://127.0.0.1:6379/0

    MILVUS_URI = /data/milvus.db   # trailing comment
    """
    assert parse_env_text(text) == {
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092",
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "MILVUS_URI": "/data/milvus.db",
    }


def test_parse_unquotes_single_and_double_quotes() -> None:
    text = "A='has # hash and spaces'\nB=\"say \\\"hi\\\" $x\"\nC=''\nD=\n"
    assert parse_env_text(text) == {
        "A": "has # hash and spaces",
        "B": 'say "hi" $x',
        "C": "",
        "D": "",
    }


@pytest.mark.parametrize(
    "bad", ["NO_EQUALS_SIGN", "1ABC=x", "BAD-NAME=x", "A='unterminated", "=value"]
)
def test_parse_rejects_malformed_lines_with_their_number(bad: str) -> None:
    with pytest.raises(ConfigError, match="line 2"):
        parse_env_text(f"OK=1\n{bad}\n")


env_keys = st.from_regex(r"[A-Z_][A-Z0-9_]{0,20}", fullmatch=True)
env_values = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=40)


@given(st.dictionaries(env_keys, env_values, max_size=8))
def test_format_then_parse_round_trips(values: dict[str, str]) -> None:
    assert parse_env_text(format_env_text(values, header="header line")) == values


def test_format_refuses_values_spanning_lines() -> None:
    with pytest.raises(ConfigError, match="spans lines"):
        format_env_text({"A": "one\ntwo"})


def test_load_stack_env_keeps_existing_variables_unless_override(tmp_path: Path) -> None:
    path = tmp_path / "stack.env"
    write_env_file(path, {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "REDIS_URL": "redis://x"})
    environ = {"KAFKA_BOOTSTRAP_SERVERS": "broker:9092"}

    exported = load_stack_env(path, environ=environ)

    assert exported == {"REDIS_URL": "redis://x"}
    assert environ == {"KAFKA_BOOTSTRAP_SERVERS": "broker:9092", "REDIS_URL": "redis://x"}
    load_stack_env(path, environ=environ, override=True)
    assert environ["KAFKA_BOOTSTRAP_SERVERS"] == "127.0.0.1:1"


def test_load_stack_env_without_file_exports_nothing(tmp_path: Path) -> None:
    environ: dict[str, str] = {}
    assert load_stack_env(tmp_path / "missing.env", environ=environ) == {}
    assert environ == {}


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:9092", ("127.0.0.1", 9092)),
        ("a:9093,b:9094", ("a", 9093)),
        ("redis://:secret@host:6380/0", ("host", 6380)),
        ("redis://127.0.0.1/0", ("127.0.0.1", 6379)),
        ("[::1]:9092", ("::1", 9092)),
        ("localhost", ("localhost", 6379)),
    ],
)
def test_split_host_port(address: str, expected: tuple[str, int]) -> None:
    assert split_host_port(address, 6379) == expected


def test_milvus_lite_path_is_moved_out_of_milvus_uri() -> None:
    environ = {"MILVUS_URI": "/data/milvus.db", "AETHER_MILVUS__URI": "/old.db"}

    assert keep_milvus_lite_path_from_pymilvus(environ)
    assert environ == {"AETHER_MILVUS__URI": "/data/milvus.db"}


def test_milvus_server_url_stays_in_milvus_uri() -> None:
    environ = {"MILVUS_URI": "http://milvus:19530"}

    assert not keep_milvus_lite_path_from_pymilvus(environ)
    assert environ == {"MILVUS_URI": "http://milvus:19530"}


def test_load_stack_env_applies_the_milvus_move(tmp_path: Path) -> None:
    path = tmp_path / "stack.env"
    write_env_file(path, {"REDIS_URL": "redis://x"})
    environ = {"MILVUS_URI": str(tmp_path / "milvus.db")}

    load_stack_env(path, environ=environ)

    assert "MILVUS_URI" not in environ
    assert environ["AETHER_MILVUS__URI"] == str(tmp_path / "milvus.db")
