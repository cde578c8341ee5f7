"""``aether bench lifecycle`` at a tiny size, on the session's broker and Redis: it runs the real
worker and server end to end and writes figures whose counts agree with each other. Timings are
not asserted (they are the benchmark's output, docs/benchmarks/lifecycle.md); errors and
mixed-version responses are correctness, and must be zero."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from cli_processes import aether

from core.settings import Settings

# Two server processes, a worker, a broker and a retraining on two cores: the global 600 s is
# too short on a slow CI machine, even with the machine to itself (``solo``).
pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.solo,
    pytest.mark.timeout(1500),
]

KEYS = {
    "new_item_recommendable_p50_s",
    "new_item_recommendable_p99_s",
    "swap_requests",
    "swap_errors",
    "swap_mixed_version_responses",
    "swap_p99_ms",
    "train_from_log_s",
    "new_item_in_store_p99_s",
    "new_item_store_to_recommendable_p99_s",
    "serve_refresh_p99_s",
}


def test_the_lifecycle_benchmark_writes_consistent_figures(
    settings: Settings, tmp_path: Path
) -> None:
    out = tmp_path / "lifecycle.json"
    aether(
        settings,
        "bench", "lifecycle", "--json", str(out),
        "--replay-limit", "3000", "--items", "4", "--interval-s", "0.5",
        "--rps", "20", "--swap-requests", "120", "--after-swap", "30", "--epochs", "1",
        timeout_s=1800,
    )  # fmt: skip
    figures = json.loads(out.read_text())
    assert set(figures) >= KEYS, sorted(KEYS - set(figures))
    assert figures["new_items_published"] == 4
    assert figures["new_items_recommendable"] == 4
    assert 0 <= figures["new_item_recommendable_p50_s"] <= figures["new_item_recommendable_p99_s"]
    # Every item was seen in both stores the worker writes (the split of the time), and serving's
    # refresh passes during the phase were read back from its /metrics.
    assert figures["new_item_content_row_found"] == figures["new_item_online_row_found"] == 4
    assert figures["new_item_in_store_found"] == 4 and figures["new_item_store_probe_errors"] == 0
    assert figures["serve_refresh_passes"] >= 1
    assert figures["serve_refresh_passes"] == (
        figures.get("serve_refresh_full_passes", 0)
        + figures.get("serve_refresh_incremental_passes", 0)
    )
    assert figures["swap_requests"] >= 120
    assert 30 <= figures["swap_new_release_responses"] <= figures["swap_requests"]
    # Requests the server sheds when the shared machine is overloaded (RESOURCE_EXHAUSTED) are
    # load, not the swap: every other error is a failure.
    assert figures["swap_errors"] - figures["swap_errors_shed"] == 0
    assert figures["swap_mixed_version_responses"] == 0
    assert figures["swap_old_release"] == "retrieval-only@items_v1"
    assert figures["swap_new_release"].endswith("@items_v1")
    assert figures["swap_new_release"] != figures["swap_old_release"]
    assert math.isfinite(figures["swap_p99_ms"]) and figures["train_from_log_s"] > 0
    assert figures["machine"]
