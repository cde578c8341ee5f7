"""``.aether/stack.env``: where the running stack's services are, as ``KEY=value`` lines.

``aether stack up`` writes it; every other command (and a shell, via ``set -a; . .aether/stack.env``)
reads it so that it talks to the same broker, Redis and Milvus. The format is the common subset
of shell, docker-compose ``env_file`` and python-dotenv: ``KEY=value`` per line, ``#`` comments,
optional ``export`` and optional single or double quotes around the value.

Pure text handling here; the only I/O is reading/writing the file and ``os.environ``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, MutableMapping
from pathlib import Path

from core.errors import ConfigError

STACK_ENV_NAME = "stack.env"
_MILVUS_SERVER_SCHEMES = ("http://", "https://", "tcp://", "unix:")
_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Values that are safe to write bare; anything else is single-quoted.
_BARE_VALUE_RE = re.compile(r"^[A-Za-z0-9_./:@%+,=-]*$")


def parse_env_text(text: str) -> dict[str, str]:
    """Parse ``KEY=value`` lines; raise :class:`ConfigError` naming the first bad line."""
    values: dict[str, str] = {}
    # Lines end at "\n" (or "\r\n") only: str.splitlines() would also split inside a value at
    # U+2028 and the other Unicode line breaks, which format_env_text writes as they are.
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not _KEY_RE.match(key):
            raise ConfigError(f"line {number}: expected KEY=value, got {raw!r}")
        values[key] = _unquote(value.strip(), number)
    return values


def _unquote(value: str, number: int) -> str:
    if value[:1] in {"'", '"'}:
        quote = value[0]
        if len(value) < 2 or value[-1] != quote:
            raise ConfigError(f"line {number}: unterminated {quote} quote")
        inner = value[1:-1]
        if quote == '"':
            inner = re.sub(r'\\(["\\$`])', r"\1", inner)
        return inner
    # An unquoted value may carry a trailing comment: "VALUE  # why".
    return re.split(r"\s+#", value, maxsplit=1)[0]


def format_env_text(values: Mapping[str, str], header: str = "") -> str:
    """Render ``values`` as lines that :func:`parse_env_text` (and a POSIX shell) read back."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    for key, value in values.items():
        if not _KEY_RE.match(key):
            raise ConfigError(f"invalid environment variable name {key!r}")
        if "\n" in value or "\r" in value:
            raise ConfigError(f"value of {key} spans lines; not allowed in an env file")
        if _BARE_VALUE_RE.match(value):
            lines.append(f"{key}={value}")
        elif "'" not in value:
            lines.append(f"{key}='{value}'")
        else:
            escaped = re.sub(r'(["\\$`])', r"\\\1", value)
            lines.append(f'{key}="{escaped}"')
    return "\n".join(lines) + "\n"


def write_env_file(path: Path, values: Mapping[str, str], header: str = "") -> None:
    """Write atomically (temp file + rename) so a reader never sees half a file; owner-only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(format_env_text(values, header))
    tmp.chmod(0o600)  # it may hold a Redis password or a Milvus token
    tmp.replace(path)


def read_env_file(path: Path) -> dict[str, str]:
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise ConfigError(f"{path} not found; run `aether stack up` first") from exc
    try:
        return parse_env_text(text)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def default_stack_env_path() -> Path:
    """``$AETHER_DATA_DIR/stack.env``, ``.aether/stack.env`` by default."""
    return Path(os.environ.get("AETHER_DATA_DIR", ".aether")) / STACK_ENV_NAME


def load_stack_env(
    path: Path | None = None,
    *,
    override: bool = False,
    environ: MutableMapping[str, str] | None = None,
) -> dict[str, str]:
    """Export the stack's ``KEY=value`` pairs into ``environ`` (``os.environ`` by default).

    Variables already set win unless ``override``: an explicit ``KAFKA_BOOTSTRAP_SERVERS=...``
    on the command line beats the file. A missing file is not an error (returns ``{}``), so
    commands work the same with a stack from ``stack up`` or with services configured by hand.
    Returns the pairs that were exported.
    """
    path = path if path is not None else default_stack_env_path()
    target = os.environ if environ is None else environ
    exported: dict[str, str] = {}
    if path.exists():
        for key, value in read_env_file(path).items():
            if override or key not in target:
                target[key] = value
                exported[key] = value
    keep_milvus_lite_path_from_pymilvus(target)
    return exported


def keep_milvus_lite_path_from_pymilvus(environ: MutableMapping[str, str]) -> bool:
    """Move a Milvus Lite file path from ``MILVUS_URI`` to ``AETHER_MILVUS__URI``.

    ``import pymilvus`` reads ``MILVUS_URI`` and raises ``ConnectionConfigException`` unless it
    is a server address, so a ``MILVUS_URI=.aether/milvus.db`` in the environment breaks every
    import of pymilvus. Settings reads ``AETHER_MILVUS__URI`` to the same effect (``MILVUS_URI``
    wins over it, so the moved value overwrites it). Call before pymilvus is first imported;
    returns True if it moved something.
    """
    uri = environ.get("MILVUS_URI", "")
    if not uri or uri.startswith(_MILVUS_SERVER_SCHEMES):
        return False
    environ["AETHER_MILVUS__URI"] = uri
    del environ["MILVUS_URI"]
    return True
