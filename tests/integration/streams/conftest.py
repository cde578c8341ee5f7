"""Fixtures of the stream worker's integration tests (services come from ``tests/conftest.py``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from streams_harness import Worker

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
