"""Metric names out of PromQL, and the metrics contract (docs/metrics.md) they are checked against.

Shared by the tests of the alert rules and the Grafana dashboard, and meant for any test that
compares them with what the processes export. Import it by module name from a test in this
folder (``import promql_names``); from elsewhere under ``tests/`` as
``from unit.stack.promql_names import ...`` (``tests/`` is on ``sys.path`` through
``tests/conftest.py`` under pytest's default import mode).

This is a tokenizer, not a parser: it expects expressions that parse (``promtool check rules``
decides that) and finds the metric names in them — identifiers that are not functions,
keywords, label names in grouping clauses, label matchers, strings or durations. Selectors by
``__name__`` are refused rather than guessed at.

    >>> sorted(metric_names('sum by (le) (rate(aether_recommend_seconds_bucket{stage="x"}[5m]))'))
    ['aether_recommend_seconds_bucket']
    >>> sorted(metric_names('a_total / on (job) group_left (arm) b offset 1h > bool 0.5'))
    ['a_total', 'b']
    >>> grafana_to_promql('rate(x{arm=~"$arm"}[$__rate_interval])')
    'rate(x{arm=~".*"}[5m])'
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
METRICS_DOC = ROOT / "docs" / "metrics.md"

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_LABEL_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
# A number or duration (5m, 1h30m, 0.99, 1e3) is one token, so its unit letters are never read
# as an identifier.
_TOKEN = re.compile(r"(?P<number>[0-9.][0-9A-Za-z_.]*)|(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
    | {"group_left", "group_right", "atan2", "inf", "nan"}
)

# Grafana's built-in interval variables, replaced by typical values so that promtool can parse.
_GRAFANA_DURATIONS = {
    "__rate_interval": "5m",
    "__interval": "1m",
    "__range": "1h",
    "__interval_ms": "60000",
    "__range_s": "3600",
    "__range_ms": "3600000",
}
_GRAFANA_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(?P<selector>.+?)\s*,)?\s*\w+\s*\)\s*$")

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads."""
    if "__name__" in expr:
        raise ValueError(f"selectors by __name__ are not supported: {expr!r}")
    text = _STRING.sub('""', expr)
    text = re.sub(r"#[^\n]*", " ", text)  # comments, now that no string can hold a '#'
    text = _LABEL_MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    names: set[str] = set()
    for token in _TOKEN.finditer(text):
        name = token.group("name")
        if name is None or name.lower() in _KEYWORDS:
            continue
        if re.match(r"\s*\(", text[token.end() :]):  # a function or an aggregation
            continue
        names.add(name)
    return names


def grafana_to_promql(expr: str) -> str:
    """A Grafana query with its variables replaced: interval variables by durations, others by
    ``.*`` (they stand inside label-matcher strings; anywhere else promtool rejects the result)."""

    def value(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group is not None)
        return _GRAFANA_DURATIONS.get(name, ".*")

    return _GRAFANA_VARIABLE.sub(value, expr)


def variable_selector(query: str) -> str | None:
    """The series selector of a ``label_values(selector, label)`` variable query (``None`` for
    ``label_values(label)``, which reads no particular metric)."""
    found = _LABEL_VALUES.match(query)
    if found is None:
        raise ValueError(f"unsupported variable query (use label_values): {query!r}")
    return found.group("selector")


def dashboard_expressions(dashboard: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """``(where, PromQL)`` for every query of a Grafana dashboard: panel targets (rows' nested
    panels included), annotations and ``label_values`` variables; Grafana variables replaced."""
    for panel in _panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            if target.get("expr"):
                where = (
                    f"panel {panel.get('id')} {panel.get('title')!r} target {target.get('refId')}"
                )
                yield where, grafana_to_promql(target["expr"])
    for annotation in dashboard.get("annotations", {}).get("list", []):
        if annotation.get("expr"):
            yield f"annotation {annotation.get('name')!r}", grafana_to_promql(annotation["expr"])
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        query = query.get("query", "") if isinstance(query, Mapping) else str(query or "")
        selector = variable_selector(query)
        if selector is not None:
            yield f"variable {variable.get('name')!r}", grafana_to_promql(selector)


def _panels(panels: list[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def rule_expressions(rules: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """``(alert or record name, PromQL)`` for every rule of a Prometheus rules file."""
    for group in rules.get("groups", []):
        for rule in group.get("rules", []):
            yield str(rule.get("alert") or rule.get("record")), str(rule["expr"])


def contract_metrics(text: str | None = None) -> dict[str, str]:
    """``{metric: type}`` from the tables of docs/metrics.md (rows ``| `name` | type | ...``)."""
    text = METRICS_DOC.read_text() if text is None else text
    rows = re.findall(r"^\|\s*`([a-zA-Z_:][a-zA-Z0-9_:]*)`\s*\|\s*([^|]+?)\s*\|", text, re.M)
    return {name: kind for name, kind in rows}


def prometheus_own_series(text: str | None = None) -> set[str]:
    """Series that Prometheus makes itself (``up``, ``ALERTS``), as docs/metrics.md lists them
    in its section "Prometheus's own series"."""
    text = METRICS_DOC.read_text() if text is None else text
    section = re.search(r"^## Prometheus's own series\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    if section is None:
        return set()
    return set(re.findall(r"`([a-zA-Z_:][a-zA-Z0-9_:]*)`", section.group(1)))


def contract_row(series: str, contract: Mapping[str, str]) -> str | None:
    """The docs/metrics.md row a series name belongs to: itself; a histogram's ``_bucket``,
    ``_sum`` or ``_count`` series → the histogram; a counter written without ``_total`` (or a
    row without it) → the counter. ``None`` if it is in no row."""
    if series in contract:
        return series
    for suffix in HISTOGRAM_SUFFIXES:
        base = series.removesuffix(suffix)
        if base != series and contract.get(base, "").startswith("histogram"):
            return base
    for candidate in (f"{series}_total", series.removesuffix("_total")):
        if candidate != series and contract.get(candidate, "").startswith("counter"):
            return candidate
    return None


def metrics_outside_contract(
    expressions: Iterator[tuple[str, str]], text: str | None = None
) -> dict[str, set[str]]:
    """``{where: names}`` of the metric names used by ``expressions`` that docs/metrics.md does
    not list (neither a row nor one of Prometheus's own series). Empty when all are listed."""
    text = METRICS_DOC.read_text() if text is None else text
    contract = contract_metrics(text)
    own = prometheus_own_series(text)
    missing: dict[str, set[str]] = {}
    for where, expr in expressions:
        unknown = {
            name
            for name in metric_names(expr)
            if name not in own and contract_row(name, contract) is None
        }
        if unknown:
            missing[where] = unknown
    return missing
