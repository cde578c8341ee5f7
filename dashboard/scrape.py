"""Scraping a process's ``/metrics``: the HTTP fetch and the parse into flat samples.

A scrape is flattened to ``{(sample name, labels): value}``: the sample name as exposed
(``aether_stream_events_total``, ``aether_recommend_seconds_bucket``, …), so the dashboard reads
the names of docs/metrics.md exactly as Prometheus would. ``_created`` samples are dropped (they
are timestamps, not values) and so are NaN values (a gauge that was never set).
"""

from __future__ import annotations

import math
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from core.errors import DependencyUnavailable, SchemaError

Labels = tuple[tuple[str, str], ...]  # sorted (name, value) pairs
SeriesKey = tuple[str, Labels]
Samples = Mapping[SeriesKey, float]

# A scrape must never hold a refresh of the page for long: a process that does not answer
# within this is reported down for this round.
SCRAPE_TIMEOUT_S = 2.0
MAX_EXPOSITION_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ScrapeTarget:
    """One process to scrape: a bounded ``name`` (``worker``, ``server-0``; the label of
    ``aether_dashboard_scrape_errors_total``) and the URL of its ``/metrics``."""

    name: str
    url: str


def parse_exposition(text: str) -> dict[SeriesKey, float]:
    """Flatten Prometheus text exposition into samples; malformed text is a ``SchemaError``."""
    samples: dict[SeriesKey, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name.endswith("_created") or math.isnan(sample.value):
                    continue
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    except (ValueError, TypeError, IndexError) as exc:  # what the parser raises on bad text
        raise SchemaError(f"cannot parse the metrics exposition: {exc}") from exc
    return samples


def fetch_exposition(url: str, timeout_s: float = SCRAPE_TIMEOUT_S) -> str:
    """GET a ``/metrics`` page; any failure is ``DependencyUnavailable`` naming the URL."""
    request = urllib.request.Request(url, headers={"Accept": "text/plain"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body: bytes = response.read(MAX_EXPOSITION_BYTES + 1)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise DependencyUnavailable(url, str(exc)) from exc
    if len(body) > MAX_EXPOSITION_BYTES:
        raise DependencyUnavailable(url, f"exposition larger than {MAX_EXPOSITION_BYTES} bytes")
    return body.decode("utf-8", errors="replace")


def scrape(target: ScrapeTarget, timeout_s: float = SCRAPE_TIMEOUT_S) -> dict[SeriesKey, float]:
    return parse_exposition(fetch_exposition(target.url, timeout_s))


def counter_totals(url: str, names: dict[str, str]) -> dict[str, int]:
    """``{key: metric}`` → ``{key: the metric summed over its labels}`` at ``url``'s exposition
    (0 for a metric it does not export); raises ``AetherError`` when it does not answer."""
    samples = parse_exposition(fetch_exposition(url))
    return {
        key: int(sum(v for (sample, _), v in samples.items() if sample == name))
        for key, name in names.items()
    }
