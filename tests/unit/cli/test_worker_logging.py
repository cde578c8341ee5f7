"""The worker's logging: the root logger keeps the level asked for (Faust's terminal spinner,
which would set it to DEBUG for every record of the consume loop, is off)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture
def root_logging() -> Iterator[None]:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.mark.parametrize("loglevel", ["warning", "info"])
def test_the_root_logger_keeps_the_workers_level(root_logging: None, loglevel: str) -> None:
    import faust

    from aether.cli.worker import worker_class

    app = faust.App("test-worker-logging", broker="kafka://127.0.0.1:1")
    worker = worker_class()(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    worker._setup_logging()
    root = logging.getLogger()
    assert root.level == logging.getLevelName(loglevel.upper())
    assert not logging.getLogger("aiokafka.consumer.fetcher").isEnabledFor(logging.DEBUG)
    assert not any(type(h).__name__ == "SpinnerHandler" for h in root.handlers)
