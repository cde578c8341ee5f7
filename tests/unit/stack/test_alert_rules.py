"""The alert rules of infra/prometheus/rules/: promtool accepts them, their unit tests pass, each
alert is tested firing and not firing, and they read only metrics that docs/metrics.md lists.

``promtool`` comes from Debian's ``prometheus`` package (fixture ``promtool`` in
tests/conftest.py: missing → a failure under ``CI=true``, a skip elsewhere).
"""

from __future__ import annotations

import subprocess
from collections import defaultdict
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from promql_names import metrics_outside_contract, rule_expressions

ROOT = Path(__file__).resolve().parents[3]
PROMETHEUS_DIR = ROOT / "infra" / "prometheus"
RULE_FILES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
RULE_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
SEVERITIES = {"critical", "warning"}


def run_promtool(promtool: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def promtool_output(result: subprocess.CompletedProcess[str]) -> str:
    return f"promtool {' '.join(result.args[1:])} exited {result.returncode}:\n{result.stdout}{result.stderr}"


def alert_rules() -> list[dict[str, Any]]:
    return [
        rule
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def test_rule_files_and_their_tests_exist() -> None:
    assert RULE_FILES, "no rule files in infra/prometheus/rules/"
    assert RULE_TESTS, "no promtool unit tests in infra/prometheus/tests/"


def test_promtool_check_rules_accepts_every_rule_file(promtool: str) -> None:
    result = run_promtool(promtool, "check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, promtool_output(result)


def test_promtool_unit_tests_of_the_rules_pass(promtool: str) -> None:
    result = run_promtool(promtool, "test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, promtool_output(result)
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_catch_a_wrong_threshold(promtool: str, tmp_path: Path) -> None:
    """The unit tests are not vacuous: the same tests against rules whose dead-letter threshold
    is 3 % instead of 1 % fail on the case that must fire."""
    rules = (PROMETHEUS_DIR / "rules" / "aether.rules.yml").read_text()
    weakened = rules.replace(
        "          > 0.01\n        for: 10m", "          > 0.03\n        for: 10m"
    )
    assert weakened != rules
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    (tmp_path / "rules" / "aether.rules.yml").write_text(weakened)
    test_file = tmp_path / "tests" / "aether.rules.test.yml"
    test_file.write_text((PROMETHEUS_DIR / "tests" / "aether.rules.test.yml").read_text())

    result = run_promtool(promtool, "test", "rules", str(test_file))

    assert result.returncode != 0
    assert "AetherDeadLetterRateHigh" in result.stdout + result.stderr


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    cases: dict[str, set[bool]] = defaultdict(set)
    for path in RULE_TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                cases[case["alertname"]].add(bool(case.get("exp_alerts")))
    untested = {
        rule["alert"]: sorted(cases.get(rule["alert"], set()))
        for rule in alert_rules()
        if cases.get(rule["alert"]) != {True, False}
    }
    assert not untested, f"alerts without a firing and a silent promtool case: {untested}"


def test_every_alert_has_a_wait_a_severity_and_texts() -> None:
    for rule in alert_rules():
        name = rule["alert"]
        assert "for" in rule, f"{name}: say how long it must hold (`for:`), even 0m"
        assert rule["labels"]["severity"] in SEVERITIES, name
        annotations = rule["annotations"]
        assert annotations.get("summary", "").strip(), f"{name}: no summary"
        assert len(annotations.get("description", "")) > len(annotations["summary"]), name


def test_alert_names_are_unique() -> None:
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda path: path.name)
def test_rules_read_only_metrics_in_the_contract(path: Path) -> None:
    missing = metrics_outside_contract(rule_expressions(yaml.safe_load(path.read_text())))
    assert not missing, f"metrics not in docs/metrics.md (add a row): {missing}"


def test_prometheus_loads_every_rule_file_locally_and_in_compose() -> None:
    """``rule_files`` (relative to prometheus.yml) finds every file of rules/ from the repository,
    and docker-compose.yml mounts those folders where the container's config looks for them."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    patterns = config["rule_files"]
    loaded = {path for pattern in patterns for path in PROMETHEUS_DIR.glob(pattern)}
    assert loaded == set(RULE_FILES)

    service = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["prometheus"]
    mounts = {}
    for volume in service["volumes"]:
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            mounts[PurePosixPath(target)] = (ROOT / source).resolve()
    config_file = next(
        PurePosixPath(arg.split("=", 1)[1])
        for arg in service["command"]
        if arg.startswith("--config.file=")
    )
    assert mounts[config_file] == PROMETHEUS_DIR / "prometheus.yml"
    for pattern in patterns:
        folder = PurePosixPath(pattern).parent
        assert mounts.get(config_file.parent / folder) == PROMETHEUS_DIR / folder, (
            f"docker-compose.yml must mount infra/prometheus/{folder} at "
            f"{config_file.parent / folder} for rule_files {pattern!r}"
        )
