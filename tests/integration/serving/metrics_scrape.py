"""Scraping a process's ``/metrics`` over HTTP, reading it, and checking it with ``promtool``."""

from __future__ import annotations

import socket
import subprocess
import urllib.request
from pathlib import Path

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from core.subprocesses import free_loopback_port


def scrape(port: int, host: str = "127.0.0.1") -> str:
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as reply:
        assert reply.status == 200
        return reply.read().decode()


def families(text: str) -> dict[str, Metric]:
    """Metric families by name (counters without their ``_total``, as the parser names them)."""
    return {family.name: family for family in text_string_to_metric_families(text)}


def value(family: Metric, sample: str, **labels: str) -> float:
    """The sample ``sample`` of ``family`` with exactly these labels (0 when absent)."""
    for found in family.samples:
        if found.name == sample and found.labels == labels:
            return float(found.value)
    return 0.0


def by_label(family: Metric, sample: str, label: str) -> dict[str, float]:
    return {s.labels[label]: float(s.value) for s in family.samples if s.name == sample}


def promtool_check_metrics(promtool: str, text: str, tmp_path: Path, name: str) -> None:
    """``promtool check metrics`` (reads stdin) accepts ``text``; the text is kept for a reader."""
    (tmp_path / f"{name}.prom").write_text(text)
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"promtool check metrics:\n{result.stdout}{result.stderr}"


def consecutive_free_ports(count: int, attempts: int = 50) -> int:
    """The first of ``count`` consecutive loopback ports nobody listens on right now."""
    for _ in range(attempts):
        first = free_loopback_port()
        if first + count - 1 <= 65535 and all(_bindable(first + i) for i in range(1, count)):
            return first
    raise RuntimeError(f"no {count} consecutive free ports found")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
