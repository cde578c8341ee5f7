"""``aether bench drift`` at a tiny size: its keys, one injected drift found, a quiet null run.

Timings are printed by the benchmark, never asserted here.
"""

from __future__ import annotations

import argparse
import json

from benchmarks import BENCHMARKS
from benchmarks import drift as bench


def run_bench(tmp_path, *extra: str) -> dict:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    out = tmp_path / "drift.json"
    args = parser.parse_args(["--dataset", "ml-latest-small", "--json", str(out), *extra])
    assert bench.command(args) == 0
    return json.loads(out.read_text())


def test_tiny_run_detects_injected_drifts_and_raises_no_null_alarm(tmp_path):
    figures = run_bench(
        tmp_path,
        *("--seeds", "1", "--requests", "5000", "--timing-updates", "20000"),
        *("--scenarios", "null,score,source_mix,lag"),
    )
    for key in (
        "null_false_alarms",
        "null_events",
        "null_impressions",
        "null_shuffled_identical_share",
        "monitor_update_us_p99",
        "monitor_us_per_observation",
        "machine",
    ):
        assert key in figures
    for scenario in ("score", "source_mix", "lag"):
        assert figures[f"drift_{scenario}_detected_share"] == 1.0
        assert figures[f"drift_{scenario}_delay_events_p50"] >= 0
        assert f"drift_{scenario}_delay_events_p90" in figures
    assert figures["null_false_alarms"] == 0
    assert figures["null_events"] > 0 and figures["null_impressions"] == 2 * 5000 * 10
    # The shuffled, duplicated delivery gave the same detections and the same state bytes.
    assert figures["null_shuffled_identical_share"] == 1.0


def test_drift_is_registered_with_aether_bench():
    assert BENCHMARKS["drift"][0] == "benchmarks.drift"
