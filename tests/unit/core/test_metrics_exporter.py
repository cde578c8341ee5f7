"""Where each process exports its metrics (``core.metrics_exporter``; docs/metrics.md)."""

from __future__ import annotations

import pytest

from core.errors import ConfigError
from core.metrics_exporter import SERVER_PORT, WORKER_PORT, exporter_port
from core.settings import MetricsSettings, Settings


def test_defaults_are_per_process_kind_and_server_processes_count_up() -> None:
    unset = MetricsSettings()
    assert exporter_port(unset, WORKER_PORT) == 9464
    assert [exporter_port(unset, SERVER_PORT, i) for i in range(3)] == [9465, 9466, 9467]
    assert exporter_port(MetricsSettings(port=9100), SERVER_PORT, 2) == 9102


def test_port_zero_turns_the_exporter_off_for_every_process() -> None:
    off = MetricsSettings(port=0)
    assert exporter_port(off, WORKER_PORT) == 0
    assert exporter_port(off, SERVER_PORT, 3) == 0


def test_a_process_past_the_last_port_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        exporter_port(MetricsSettings(port=65535), SERVER_PORT, 1)


def test_an_empty_port_in_the_environment_means_the_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AETHER_METRICS__PORT", "")
    monkeypatch.setenv("AETHER_METRICS__HOST", "0.0.0.0")
    metrics = Settings().metrics
    assert metrics == MetricsSettings(host="0.0.0.0", port=None)
    monkeypatch.setenv("AETHER_METRICS__PORT", "9500")
    assert Settings().metrics.port == 9500
