"""Fixtures of the stream worker's integration tests (services come from ``tests/conftest.py``).

``start_worker(settings)`` starts a worker of its own for a test (crashes, group changes);
``lane`` is a test's share of one worker that runs for the whole session (its start-up is most
of a short test's cost): the worker's namespace, with ids and event times no other test uses.
The modules that take ``lane`` form one unit of work for pytest-xdist (``tests/conftest.py``,
``SHARED_STREAM_WORKER``), so that they find the same worker.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from streams_harness import MONTH_MS, T0, Lane, Worker

from core.settings import Settings
from streams.topics import ensure_topics


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[[Settings], Worker]]:
    workers: list[Worker] = []

    def _start(settings: Settings) -> Worker:
        ensure_topics(settings)
        worker = Worker(settings, tmp_path / f"worker-{len(workers)}.log")
        workers.append(worker)
        return worker

    yield _start
    for worker in workers:
        worker.kill9()  # state is crash-safe, and a graceful Faust shutdown takes seconds


@pytest.fixture(scope="session")
def shared_worker(
    kafka_bootstrap: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    """A worker on a namespace of its own, for every ``lane`` of the session."""
    from stack.redis_server import delete_namespace_keys

    folder = tmp_path_factory.mktemp("shared-worker")
    settings = Settings(
        namespace=f"t{uuid.uuid4().hex[:12]}",
        data_dir=folder / ".aether",
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        REDIS_URL=redis_url,
        MILVUS_URI=str(folder / "milvus.db"),
    )
    ensure_topics(settings)
    worker = Worker(settings, folder / "worker.log")
    try:
        yield worker
    finally:
        worker.kill9()
        delete_namespace_keys(redis_url, settings.namespace)


_lanes = itertools.count()


@pytest.fixture
def lane(shared_worker: Worker) -> Lane:
    """This test's ids (``tag``) and event times (``t0``) on the shared worker's namespace."""
    assert shared_worker.process.poll() is None, shared_worker.log_path.read_text(errors="replace")
    n = next(_lanes)
    return Lane(shared_worker.settings, f"l{n}-", T0 + n * MONTH_MS)
