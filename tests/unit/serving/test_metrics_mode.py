"""Server processes keep prometheus_client in its ordinary in-process mode, although importing
Feast (``feast.metrics``) would switch the whole process to multiprocess mode
(``core.metrics_exporter`` says why that matters)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
# What ``feast.metrics`` does at import (feast 0.6x), after the server's entry module: importing
# Feast itself here would take half a minute.
PROBE = """
import os
import serving.processes  # the server's entry module, as `aether serve` and its workers load it
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", "/nonexistent")
import prometheus_client.values as values
from serving.server_metrics import REQUESTS
REQUESTS.labels(status="OK").inc()
print(values.ValueClass.__name__)
"""


def test_feast_does_not_switch_the_server_to_multiprocess_metrics(tmp_path: Path) -> None:
    # Also when the variable is inherited, as a child of a process that imported Feast gets it.
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "MutexValue"
    assert not list(tmp_path.iterdir())  # no metric files were written
