"""The Grafana provisioning and dashboards of infra/grafana/ agree with each other, with
docker-compose.yml and with the metrics contract: unique panel ids, every query on the
provisioned datasource, every PromQL expression parses (``promtool check rules`` on them as
recording rules) and reads only metrics that docs/metrics.md lists.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from promql_names import dashboard_expressions, metric_names, metrics_outside_contract

ROOT = Path(__file__).resolve().parents[3]
GRAFANA_DIR = ROOT / "infra" / "grafana"
DASHBOARDS = sorted((GRAFANA_DIR / "dashboards").glob("*.json"))


def provisioned_datasources() -> list[dict[str, Any]]:
    return [
        datasource
        for path in sorted((GRAFANA_DIR / "provisioning" / "datasources").glob("*.yml"))
        for datasource in yaml.safe_load(path.read_text())["datasources"]
    ]


def prometheus_uid() -> str:
    (datasource,) = [d for d in provisioned_datasources() if d["type"] == "prometheus"]
    return str(datasource["uid"])


def load(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def all_panels(panels: list[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def compose_service(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"][name])


def bind_mounts(service: Mapping[str, Any]) -> dict[PurePosixPath, Path]:
    """``{container path: repository path}`` of a service's ``./…`` volumes."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            mounts[PurePosixPath(target)] = (ROOT / source).resolve()
    return mounts


def check_as_recording_rules(promtool: str, expressions: list[str], folder: Path) -> str:
    """Run ``promtool check rules`` on ``expressions`` as recording rules; its output if it
    rejects them, else ""."""
    rules = [{"record": f"grafana:query_{n}", "expr": expr} for n, expr in enumerate(expressions)]
    path = folder / "dashboard-queries.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return "" if result.returncode == 0 else result.stdout + result.stderr


def test_there_is_a_dashboard_and_one_prometheus_datasource() -> None:
    assert DASHBOARDS
    assert prometheus_uid()


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.name)
def test_panel_ids_are_unique(path: Path) -> None:
    ids = [panel["id"] for panel in all_panels(load(path)["panels"])]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.name)
def test_every_query_uses_the_provisioned_datasource(path: Path) -> None:
    dashboard = load(path)
    uid = prometheus_uid()
    wrong = []
    for panel in all_panels(dashboard["panels"]):
        if panel["type"] == "row":
            continue
        assert panel.get("targets"), f"panel {panel['id']} {panel['title']!r} has no query"
        for owner in [panel, *panel["targets"]]:
            if owner.get("datasource", {}).get("uid") != uid:
                wrong.append(f"panel {panel['id']} {panel['title']!r}: {owner.get('datasource')}")
    for item in [
        *dashboard.get("annotations", {}).get("list", []),
        *dashboard.get("templating", {}).get("list", []),
    ]:
        if item.get("datasource", {}).get("uid") != uid:
            wrong.append(f"{item.get('name')!r}: {item.get('datasource')}")
    assert not wrong, f"not on the provisioned datasource {uid!r}: {wrong}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.name)
def test_every_promql_expression_parses(path: Path, promtool: str, tmp_path: Path) -> None:
    expressions = [expr for _, expr in dashboard_expressions(load(path))]
    assert expressions
    rejected = check_as_recording_rules(promtool, expressions, tmp_path)
    assert not rejected, f"promtool rejects a query of {path.name}:\n{rejected}"


def test_the_parse_check_rejects_a_broken_expression(promtool: str, tmp_path: Path) -> None:
    good = "sum by (arm) (rate(aether_bandit_rewards_total[5m]))"
    assert not check_as_recording_rules(promtool, [good], tmp_path)
    assert check_as_recording_rules(promtool, [good, "sum by (arm (rate(x[5m]))"], tmp_path)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.name)
def test_dashboard_reads_only_metrics_in_the_contract(path: Path) -> None:
    expressions = list(dashboard_expressions(load(path)))
    assert any(metric_names(expr) for _, expr in expressions)
    missing = metrics_outside_contract(iter(expressions))
    assert not missing, f"metrics not in docs/metrics.md (add a row): {missing}"


def test_dashboard_covers_the_operator_views() -> None:
    """The production dashboard shows what an operator needs (issue 16): each view by the metric
    it is drawn from."""
    used = {
        name
        for path in DASHBOARDS
        for _, expr in dashboard_expressions(load(path))
        for name in metric_names(expr)
    }
    views = {
        "lag": "aether_stream_consumer_lag_records",
        "event-time lag": "aether_stream_consumer_lag_seconds",
        "events by type": "aether_stream_events_by_type_total",
        "freshness": "aether_stream_freshness_seconds_bucket",
        "model version": "aether_model_info",
        "CTR per arm": "aether_bandit_rewards_total",
        "dismiss rate per arm": "aether_bandit_dismissals_total",
        "drift detections": "aether_drift_detections_total",
        "drift statistics (exposure)": "aether_drift_statistic",
        "score distribution": "aether_recommend_top_score_bucket",
        "candidate-source mix": "aether_recommend_candidates_total",
        "latency per stage": "aether_recommend_stage_seconds_bucket",
        "fallbacks by reason": "aether_recommend_fallbacks_total",
        "breaker states": "aether_breaker_state",
        "dead letters": "aether_stream_dead_letters_total",
        "late events": "aether_stream_late_events_total",
    }
    missing = {view: metric for view, metric in views.items() if metric not in used}
    assert not missing


def test_drift_detections_are_marked_on_the_dashboard() -> None:
    """Markers come from the AetherDriftDetected alert (which also sees a label set's first
    detection since the worker started), so that alert must exist under that name."""
    annotations = [
        annotation
        for path in DASHBOARDS
        for annotation in load(path).get("annotations", {}).get("list", [])
        if 'alertname="AetherDriftDetected"' in annotation.get("expr", "")
    ]
    rules = (ROOT / "infra" / "prometheus" / "rules").glob("*.yml")
    alerts = {
        rule.get("alert")
        for path in rules
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    }
    assert annotations and all(annotation["enable"] for annotation in annotations)
    assert "AetherDriftDetected" in alerts


def test_datasource_points_at_the_compose_prometheus() -> None:
    (datasource,) = [d for d in provisioned_datasources() if d["type"] == "prometheus"]
    url = urlsplit(datasource["url"])
    prometheus = compose_service("prometheus")
    container_ports = {int(str(port).split(":")[-1]) for port in prometheus["ports"]}
    assert url.hostname == "prometheus"
    assert url.port in container_ports


def test_compose_mounts_the_provisioning_and_the_dashboards_where_grafana_reads_them() -> None:
    grafana = compose_service("grafana")
    mounts = bind_mounts(grafana)
    assert mounts[PurePosixPath("/etc/grafana/provisioning")] == GRAFANA_DIR / "provisioning"

    (provider_file,) = sorted((GRAFANA_DIR / "provisioning" / "dashboards").glob("*.yml"))
    (provider,) = yaml.safe_load(provider_file.read_text())["providers"]
    dashboards_in_container = PurePosixPath(provider["options"]["path"])
    assert mounts[dashboards_in_container] == GRAFANA_DIR / "dashboards"

    home = PurePosixPath(grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert home.parent == dashboards_in_container
    assert (GRAFANA_DIR / "dashboards" / home.name).is_file()
    assert "prometheus" in grafana["depends_on"]
