"""Reading the YAML configuration files of serving (rules, experiments) with one set of errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from core.errors import ConfigError


def read_yaml(path: str | Path, what: str) -> Any:
    """The parsed document (``{}`` for an empty file); ``ConfigError`` names the file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {what} file {path}: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} file {path} is not valid YAML: {exc}") from exc
    return {} if data is None else data
