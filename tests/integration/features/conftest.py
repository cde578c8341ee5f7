"""Fixtures for the feature stores against the real Redis (shared: every test gets its own
namespace, and only that namespace's keys are removed afterwards — never FLUSHDB)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from core.settings import Settings


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(Settings().redis.url.get_secret_value())
    client.ping()  # a missing Redis is a failure, never a skip
    yield client
    client.close()


@pytest.fixture
def make_settings(tmp_path: Path, redis_client: redis.Redis) -> Iterator[Callable[[], Settings]]:
    """Fresh settings per call: a unique namespace and a private data folder."""
    namespaces: list[str] = []

    def make() -> Settings:
        namespace = f"t{uuid.uuid4().hex[:12]}"
        namespaces.append(namespace)
        return Settings(namespace=namespace, data_dir=tmp_path / namespace)

    yield make
    for namespace in namespaces:
        # Feast keys end with the project (= namespace); unique names make the suffix match exact.
        keys = list(redis_client.scan_iter(match=f"*{namespace}".encode(), count=1000))
        if keys:
            redis_client.delete(*keys)


@pytest.fixture
def settings(make_settings: Callable[[], Settings]) -> Settings:
    return make_settings()
