"""The metric-name extraction that the alert-rule and dashboard tests rely on (promql_names)."""

from __future__ import annotations

import pytest
from promql_names import (
    contract_metrics,
    contract_row,
    grafana_to_promql,
    metric_names,
    metrics_outside_contract,
    prometheus_own_series,
    variable_selector,
)

DOC = """\
| metric | type | labels | meaning |
|---|---|---|---|
| `aether_requests_total` | counter | `status` | calls |
| `aether_latency_seconds` | histogram | — | latency |
| `aether_model_info` | gauge (1) | `model_version` | version |

## Prometheus's own series

Prometheus makes `up` and `ALERTS` itself.

## Next section

`not_own` is mentioned here only.
"""


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("aether_model_info", {"aether_model_info"}),
        (
            'histogram_quantile(0.99, sum by (le, stage) (rate(a_bucket{stage="x"}[5m])))',
            {"a_bucket"},
        ),
        (
            "sum(rate(a_total[5m])) / sum(rate(b_total[5m] offset 1h)) > 0.01",
            {"a_total", "b_total"},
        ),
        ("x and on (job, instance) (up offset 10m == 1)", {"x", "up"}),
        ("a * on (arm) group_left (model_version) b", {"a", "b"}),
        ("sum without (instance) (c) unless ignoring (reason) d", {"c", "d"}),
        ('count(ALERTS{alertstate="firing", alertname=~"Aether.*"}) or vector(0)', {"ALERTS"}),
        ('label_replace(m, "dst", "$1 by (x)", "src", "(.*)")', {"m"}),
        ("max_over_time(rate(e_total[5m])[1h:1m]) > bool 1e3", {"e_total"}),
        ("sum(f) by (le) # the rest is a comment: g_total", {"f"}),
        ("topk(5, h) + Inf - NaN", {"h"}),
    ],
)
def test_metric_names(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_selectors_by_name_are_refused() -> None:
    with pytest.raises(ValueError, match="__name__"):
        metric_names('{__name__=~"aether_.*"}')


def test_grafana_variables_become_parsable_promql() -> None:
    expr = (
        'sum by (arm) (increase(a_total{arm=~"$arm", x="${signal:regex}"}[$__range])) / $__range_s'
    )
    assert grafana_to_promql(expr) == (
        'sum by (arm) (increase(a_total{arm=~".*", x=".*"}[1h])) / 3600'
    )
    assert grafana_to_promql("rate(a[$__rate_interval])") == "rate(a[5m])"


def test_variable_selector() -> None:
    assert variable_selector("label_values(aether_model_info, model_version)") == (
        "aether_model_info"
    )
    assert variable_selector('label_values(m{job="w"}, arm)') == 'm{job="w"}'
    assert variable_selector("label_values(arm)") is None
    with pytest.raises(ValueError, match="label_values"):
        variable_selector("query_result(up)")


def test_contract_rows_and_series_mapping() -> None:
    contract = contract_metrics(DOC)
    assert contract == {
        "aether_requests_total": "counter",
        "aether_latency_seconds": "histogram",
        "aether_model_info": "gauge (1)",
    }
    assert contract_row("aether_latency_seconds_bucket", contract) == "aether_latency_seconds"
    assert contract_row("aether_latency_seconds_count", contract) == "aether_latency_seconds"
    assert contract_row("aether_requests_total", contract) == "aether_requests_total"
    assert contract_row("aether_requests", contract) == "aether_requests_total"
    assert contract_row("aether_model_info_bucket", contract) is None  # not a histogram
    assert contract_row("aether_unknown_total", contract) is None
    assert prometheus_own_series(DOC) == {"up", "ALERTS"}


def test_metrics_outside_contract_names_where_they_are_used() -> None:
    expressions = [
        ("rule A", "rate(aether_requests_total[5m]) and up == 1"),
        ("panel 3", "rate(aether_latency_seconds_bucket[5m]) / rate(aether_missing_total[5m])"),
        ("panel 4", "not_own"),
    ]
    assert metrics_outside_contract(iter(expressions), DOC) == {
        "panel 3": {"aether_missing_total"},
        "panel 4": {"not_own"},
    }


def test_the_real_contract_lists_histograms_and_prometheus_series() -> None:
    contract = contract_metrics()
    assert contract["aether_recommend_seconds"] == "histogram"
    assert contract["aether_recommend_requests_total"] == "counter"
    assert {"up", "ALERTS"} <= prometheus_own_series()
