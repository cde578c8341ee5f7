"""``benchmarks.machine.read_stat`` (a process's CPU from ``/proc``), the machine line of
``aether bench ingest`` and its ``--pairs`` argument."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import pytest

from benchmarks.ingest import add_arguments, services_line
from benchmarks.machine import read_stat


def test_process_cpu_follows_the_process_own_clock() -> None:
    stat = Path(f"/proc/{os.getpid()}/stat")

    def process_cpu_s() -> float:
        info = read_stat(stat)
        assert info is not None
        return info.cpu_s

    before, clock_before = process_cpu_s(), time.process_time()
    total = 0
    while time.process_time() - clock_before < 0.3:  # burn CPU, not wall time
        total += sum(range(1000))
    used, clock_used = process_cpu_s() - before, time.process_time() - clock_before
    assert total > 0
    # /proc counts in clock ticks (10 ms here), the process clock in ns: equal within a few ticks.
    assert used == pytest.approx(clock_used, abs=0.05)


def test_the_machine_line_adds_the_services_to_the_workers() -> None:
    line = services_line({"redis": 9.0, "broker": 8.5}, 100.2)
    assert line == "machine CPU per event (µs): workers 100.2, redis 9.0, broker 8.5; 117.7 in all"


def test_pairs_must_be_at_least_one() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args([]).pairs == 3
    assert parser.parse_args(["--pairs", "1"]).pairs == 1
    with pytest.raises(SystemExit):
        parser.parse_args(["--pairs", "0"])
