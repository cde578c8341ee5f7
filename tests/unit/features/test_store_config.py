"""Feast configuration derived from settings (no service is contacted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import ConfigError
from core.settings import Settings
from features.repo.definitions import build_repo
from features.schema import ITEM_FEATURES, USER_FEATURES
from features.store import feature_history_dir, redis_connection_string, repo_config


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/0", "127.0.0.1:6379,db=0"),
        ("redis://cache.internal:6380/3", "cache.internal:6380,db=3"),
        ("redis://localhost", "localhost:6379,db=0"),
        ("redis://:s%40cret@h:1/2", "h:1,db=2,password=s@cret"),
        ("rediss://app:pw@h:6390/1", "h:6390,db=1,username=app,password=pw,ssl=true"),
    ],
)
def test_redis_url_becomes_feast_connection_string(url: str, expected: str) -> None:
    assert redis_connection_string(url) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:7000", "127.0.0.1:7000"),
        ("redis://node-a:7001/0", "node-a:7001"),
        ("rediss://app:pw@h:6390", "h:6390,username=app,password=pw,ssl=true"),
    ],
)
def test_a_cluster_node_url_becomes_feast_connection_string_without_db(
    url: str, expected: str
) -> None:
    assert redis_connection_string(url, cluster=True) == expected


@pytest.mark.parametrize("url", ["http://h:1/0", "redis://h:1/zero"])
def test_bad_redis_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError):
        redis_connection_string(url)


def test_a_cluster_url_with_another_database_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="only database 0"):
        redis_connection_string("redis://h:7000/2", cluster=True)


def test_repo_config_is_per_namespace(tmp_path: Path) -> None:
    settings = Settings(namespace="shop_eu", data_dir=tmp_path)
    config = repo_config(settings.redis, settings.deployment)
    assert config.project == "shop_eu"
    assert config.registry.path == str(tmp_path.resolve() / "feast" / "shop_eu" / "registry.db")
    assert config.online_store.connection_string.startswith("127.0.0.1:6379")
    assert config.online_store.redis_type == "redis"
    assert config.offline_store.type == "file"


def test_a_cluster_deployment_gives_feast_its_cluster_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AETHER_REDIS__CLUSTER", "true")
    monkeypatch.setenv("REDIS_URL", "redis://10.0.0.5:7000")
    settings = Settings(namespace="shop_eu", data_dir=tmp_path)
    config = repo_config(settings.redis, settings.deployment)
    assert config.online_store.redis_type == "redis_cluster"
    assert config.online_store.connection_string == "10.0.0.5:7000"


def test_views_hold_exactly_the_schema_features(tmp_path: Path) -> None:
    repo = build_repo(feature_history_dir(Settings(data_dir=tmp_path).deployment))
    assert tuple(f.name for f in repo.user_features.features) == USER_FEATURES
    assert tuple(f.name for f in repo.item_features.features) == ITEM_FEATURES
    assert repo.user_features.entities == ["user"]
    assert repo.user_push.batch_source.path.startswith(str(tmp_path.resolve()))
