"""The Prometheus exporter of every long-running process: ``/metrics`` over HTTP on the address of
``core.settings.MetricsSettings`` (docs/metrics.md has the metrics and the address layout).

Each process exports its own metrics on its own port; nothing is aggregated in process.
``aether serve --processes N`` therefore listens on ``port``, ``port + 1``, …, ``port + N - 1``
(one per server process, ``offset`` = its index) and Prometheus scrapes each one: counters and
histograms add up across processes in PromQL (``sum by (…)``), and gauges such as a breaker's
state stay true to the process they describe.

A port that is taken does not stop the process: its real work (serving, consuming) matters more
than its metrics, and two workers of one namespace may well run on one host. The exporter logs
an error naming the setting to change, and Prometheus reports the missing target (``up == 0``).
"""

from __future__ import annotations

import logging
import os

# Each process exports its own values, so prometheus_client must run in its ordinary in-process
# mode. Feast switches its multiprocess mode on for the whole process: importing ``feast.metrics``
# sets PROMETHEUS_MULTIPROC_DIR (unless set) before prometheus_client is first imported, and
# every child process inherits the variable. Metric values then live in mmap files in a temp
# folder and each update costs about three times as much. Importing this module first (the
# entry points do: ``serving.processes``, ``aether worker``) clears the variables and loads
# prometheus_client in its ordinary mode; a later ``feast.metrics`` no longer changes it.
for _variable in ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir"):
    os.environ.pop(_variable, None)
os.environ.pop("PROMETHEUS_MULTIPROCESS_DIR", None)  # Feast's own name for the same folder

from prometheus_client import start_http_server  # noqa: E402 - after the variables are cleared

from core.errors import ConfigError  # noqa: E402
from core.settings import MetricsSettings  # noqa: E402

log = logging.getLogger(__name__)

WORKER_PORT = 9464  # ``aether worker``
SERVER_PORT = 9465  # ``aether serve`` (its process i: SERVER_PORT + i)


# How the exporter's outcome begins in the log; harnesses that start a process on ports they
# chose wait for these (benchmarks.serve_server.ServerProcess.serving).
LISTENING = "Prometheus metrics on"
CANNOT_LISTEN = "metrics exporter cannot listen"


def exporter_port(settings: MetricsSettings, default_port: int, offset: int = 0) -> int:
    """The port this process exports on; 0: no exporter."""
    port = default_port if settings.port is None else settings.port
    if port and port + offset > 65535:
        raise ConfigError(f"metrics port {port} + process {offset} is past 65535")
    return port + offset if port else 0


def start_metrics_exporter(
    settings: MetricsSettings, *, default_port: int, offset: int = 0
) -> str | None:
    """Serve the process-wide registry on ``settings.host``; return the URL of ``/metrics``, or
    ``None`` when the exporter is off (port 0) or could not listen (logged as an error)."""
    port = exporter_port(settings, default_port, offset)
    if not port:
        log.info("metrics exporter off (port 0)")
        return None
    try:
        start_http_server(port, addr=settings.host)
    except OSError as exc:
        log.error(
            "%s on %s:%d (%s): this process exports no metrics; "
            "choose another port with --metrics-port or AETHER_METRICS__PORT",
            CANNOT_LISTEN,
            settings.host,
            port,
            exc.strerror or exc,
        )
        return None
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    url = f"http://{host}:{port}/metrics"
    log.info("%s %s", LISTENING, url)
    return url
