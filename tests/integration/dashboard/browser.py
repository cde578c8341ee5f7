"""Reading the dashboard as a browser does: Chromium's DOM dump, parsed, and its JSON status."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest


def dump_dom(chromium: str, url: str, profile: Path) -> str:
    result = subprocess.run(
        [
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            f"--user-data-dir={profile}", "--dump-dom", url,
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if result.returncode != 0 or "<html" not in result.stdout:
        pytest.fail(f"chromium --dump-dom failed ({result.returncode}): {result.stderr[-2000:]}")
    return result.stdout


def wait_for_status(url: str, ready, timeout_s: float = 90.0) -> dict:
    deadline = time.monotonic() + timeout_s
    status: dict = {}
    while time.monotonic() < deadline:
        with urllib.request.urlopen(url + "api/status", timeout=10) as response:
            status = json.load(response)
        if ready(status):
            return status
        time.sleep(0.5)
    pytest.fail(f"the dashboard never got there; last status: {json.dumps(status)[:3000]}")


class Dom(HTMLParser):
    """What the browser built: each chart (svg) with its series paths and bars, the drift rows."""

    def __init__(self) -> None:
        super().__init__()
        self.charts: dict[str, dict[str, list[dict[str, str]]]] = {}
        self.drift_rows: list[str] = []
        self.drift_row_text: list[str] = []
        self.tags_in_drift_rows: list[str] = []
        self._chart: str | None = None
        self._row: int | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "svg":
            self._chart = a.get("aria-label", "")
            self.charts[self._chart] = {"series": [], "estimate": [], "bar": [], "alarm": []}
        elif self._chart is not None and a.get("class") in ("series", "estimate", "bar", "alarm"):
            self.charts[self._chart][a["class"]].append(a)
        if tag == "tr" and a.get("class") == "detection":
            self.drift_rows.append(a.get("data-detection-id", ""))
            self.drift_row_text.append("")
            self._row = len(self.drift_rows) - 1
        elif self._row is not None:
            self.tags_in_drift_rows.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self._chart = None
        if tag == "tr":
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._row is not None:
            self.drift_row_text[self._row] += data + "|"
