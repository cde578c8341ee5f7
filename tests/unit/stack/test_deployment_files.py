"""docker-compose.yml, the Dockerfile, prometheus.yml and aether.env.example agree with Settings.

No Docker engine runs on the development or CI machines, so these files are checked by reading
them (docs/architecture.md): service names, published ports and environment names against
``core.settings.Settings``.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices, BaseModel

from core.metrics_exporter import SERVER_PORT, WORKER_PORT, exporter_port
from core.settings import Settings
from core.subprocesses import split_host_port
from stack.env_file import parse_env_text

ROOT = Path(__file__).resolve().parents[3]
STANDARD_NAMES = {"KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "MILVUS_URI", "AETHER_NAMESPACE"}


def settings_env_names() -> set[str]:
    """Every variable Settings reads: ``AETHER_<FIELD>``, ``AETHER_<SECTION>__<FIELD>``, aliases."""
    prefix = str(Settings.model_config.get("env_prefix", ""))
    delimiter = str(Settings.model_config.get("env_nested_delimiter", "__"))
    names: set[str] = set()
    for field_name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(choice) for choice in alias.choices)
        elif isinstance(field.default, BaseModel):
            for sub_name in type(field.default).model_fields:
                names.add(f"{prefix}{field_name}{delimiter}{sub_name}".upper())
        else:
            names.add(f"{prefix}{field_name}".upper())
    return names


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings built from exactly ``env`` (the test process's own variables removed)."""
    for name in settings_env_names():
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    return Settings()


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))


def published(service: dict[str, Any]) -> dict[int, int]:
    """``{container_port: host_port}`` of ``"[ip:]host:container"`` port entries."""
    ports: dict[int, int] = {}
    for entry in service.get("ports", []):
        parts = str(entry).split(":")
        ports[int(parts[-1])] = int(parts[-2])
    return ports


def test_compose_has_every_production_service(compose: dict[str, Any]) -> None:
    expected = {
        "kafka",
        "redis",
        "etcd",
        "minio",
        "milvus",
        "postgres",
        "prometheus",
        "grafana",
        "worker",
        "server",
    }
    assert expected <= set(compose["services"])
    assert compose["services"]["kafka"]["image"].startswith("apache/kafka:")
    assert compose["services"]["redis"]["image"].startswith("redis:7")
    assert compose["services"]["postgres"]["image"].startswith("postgres:15")
    milvus = compose["services"]["milvus"]
    assert milvus["environment"]["ETCD_ENDPOINTS"].split(":")[0] == "etcd"
    assert milvus["environment"]["MINIO_ADDRESS"].split(":")[0] == "minio"


@pytest.mark.parametrize(("role", "command"), [("worker", "worker"), ("server", "serve")])
def test_project_services_build_the_image_and_run_aether(
    compose: dict[str, Any], role: str, command: str
) -> None:
    service = compose["services"][role]
    assert service["command"] == ["aether", command]
    assert (ROOT / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
    assert set(service["environment"]) >= STANDARD_NAMES


@pytest.mark.parametrize("role", ["init", "worker", "server"])
def test_project_environment_uses_only_names_settings_reads(
    compose: dict[str, Any], role: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = compose["services"][role]["environment"]
    unknown = set(env) - settings_env_names()
    assert not unknown, f"{role} sets variables Settings does not read: {sorted(unknown)}"
    settings = settings_from(env, monkeypatch)  # values must validate too

    services = compose["services"]
    kafka_host, kafka_port = split_host_port(settings.kafka.bootstrap_servers, 9092)
    assert kafka_host in services
    assert f"://:{kafka_port}" in services["kafka"]["environment"]["KAFKA_LISTENERS"]
    redis_host, redis_port = split_host_port(settings.redis.url.get_secret_value(), 6379)
    assert (redis_host, redis_port) == ("redis", 6379)
    milvus_host, milvus_port = split_host_port(settings.milvus.uri, 19530)
    assert milvus_host in services and milvus_port in published(services["milvus"])


def test_server_publishes_the_grpc_port_it_listens_on(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = compose["services"]["server"]
    settings = settings_from(server["environment"], monkeypatch)

    assert settings.serving.port == Settings.model_fields["serving"].default.port == 50051
    assert settings.serving.host == "0.0.0.0"  # loopback inside a container is unreachable
    assert published(server)[settings.serving.port] == settings.serving.port


def test_host_ports_match_the_settings_defaults(compose: dict[str, Any]) -> None:
    """From the host, default Settings reach the compose services with no configuration."""
    defaults = Settings.model_fields
    services = compose["services"]
    _, kafka_port = split_host_port(defaults["kafka"].default.bootstrap_servers, 9092)
    _, redis_port = split_host_port(defaults["redis"].default.url.get_secret_value(), 6379)

    assert kafka_port in published(services["kafka"]).values()
    advertised = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert f"EXTERNAL://127.0.0.1:{kafka_port}" in advertised
    assert published(services["redis"])[6379] == redis_port


def test_prometheus_scrapes_project_services(compose: dict[str, Any]) -> None:
    mount = compose["services"]["prometheus"]["volumes"][0].split(":")[0]
    config = yaml.safe_load((ROOT / mount).read_text())
    targets = {
        target.split(":")[0]
        for job in config["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    }
    assert {"worker", "server"} <= targets
    assert targets - {"localhost"} <= set(compose["services"])


@pytest.mark.parametrize(
    ("role", "default_port"), [("worker", WORKER_PORT), ("server", SERVER_PORT)]
)
def test_prometheus_scrapes_the_metrics_port_each_service_listens_on(
    compose: dict[str, Any], role: str, default_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/metrics.md: every process serves /metrics on its own port (server process i on
    port + i), on all interfaces in a container; Prometheus scrapes exactly those addresses."""
    service = compose["services"][role]
    settings = settings_from(service["environment"], monkeypatch)
    command = [str(arg) for arg in service["command"]]
    metrics = settings.metrics
    processes = settings.serving.processes if role == "server" else 1
    if "--metrics-port" in command:
        port = int(command[command.index("--metrics-port") + 1])
        metrics = metrics.model_copy(update={"port": port})
    if "--processes" in command:
        processes = int(command[command.index("--processes") + 1])
    listening = {f"{role}:{exporter_port(metrics, default_port, i)}" for i in range(processes)}

    mount = compose["services"]["prometheus"]["volumes"][0].split(":")[0]
    config = yaml.safe_load((ROOT / mount).read_text())
    scraped = {
        target
        for job in config["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
        if target.split(":")[0] == role
    }
    assert metrics.host == "0.0.0.0", f"{role}: loopback inside a container cannot be scraped"
    assert exporter_port(metrics, default_port) != 0, f"{role}: its metrics exporter is off"
    assert scraped == listening


def test_dockerfile_copies_every_package_and_exposes_grpc() -> None:
    dockerfile = (ROOT / "infra/docker/Dockerfile").read_text()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = [
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    ]
    copied = set(re.findall(r"^COPY\s+(\w+)/\s", dockerfile, flags=re.MULTILINE))

    assert set(packages) <= copied
    assert "torch==2.13.0" in dockerfile
    assert re.search(r"^EXPOSE\s.*\b50051\b", dockerfile, flags=re.MULTILINE)


def test_env_example_lists_every_setting_with_its_default(monkeypatch: pytest.MonkeyPatch) -> None:
    example = parse_env_text((ROOT / "infra/aether.env.example").read_text())

    assert set(example) == settings_env_names()
    defaults = settings_from({}, monkeypatch).model_dump()
    assert settings_from(example, monkeypatch).model_dump() == defaults
