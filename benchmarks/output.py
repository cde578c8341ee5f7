"""How benchmarks and evaluations hand out figures: printed one per line, and ``--json PATH``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def write_json(path: Path | str | None, figures: Mapping[str, Any]) -> None:
    """Write ``figures`` as one flat JSON object (nothing when ``path`` is None)."""
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(figures), indent=2, sort_keys=True, default=str) + "\n")


def print_figures(figures: Mapping[str, Any]) -> None:
    for name, value in sorted(figures.items()):
        print(f"{name:<40} {value:.3f}" if isinstance(value, float) else f"{name:<40} {value}")
