"""``Settings.deployment``: the namespace value adapters take, naming exactly as ``Settings``."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.errors import ConfigError
from core.settings import Deployment, Settings

NAMESPACES = st.from_regex(r"[a-z][a-z0-9_]{0,31}", fullmatch=True)
PARTS = st.lists(st.text(alphabet="abcxyz-_:0123", min_size=1, max_size=8), max_size=3)


@given(NAMESPACES, PARTS)
def test_the_deployment_derives_every_name_as_the_settings_do(
    namespace: str, parts: list[str]
) -> None:
    settings = Settings(namespace=namespace, data_dir=Path("/tmp/x"))
    deployment = settings.deployment
    assert deployment == Deployment(namespace, Path("/tmp/x"))
    assert deployment.redis_key(*parts) == settings.redis_key(*parts)
    assert deployment.topic("events") == settings.topic("events") == f"{namespace}.events"
    assert deployment.milvus_collection("items") == settings.milvus_collection("items")
    assert deployment.consumer_group == settings.consumer_group
    assert deployment.feast_project == settings.feast_project == namespace


def test_two_namespaces_share_no_name() -> None:
    a, b = Deployment("team_a"), Deployment("team_b")
    assert a.redis_key("retrieval") != b.redis_key("retrieval")
    assert a.milvus_collection("items") != b.milvus_collection("items")


def test_a_copy_with_another_namespace_gets_that_deployment() -> None:
    copy = Settings(namespace="one").model_copy(update={"namespace": "two"})
    assert copy.deployment.redis_key("k") == "two:k"


@pytest.mark.parametrize("bad", ["", "Upper", "1digit", "has-dash", "x" * 33])
def test_a_bad_namespace_is_a_config_error(bad: str) -> None:
    with pytest.raises(ConfigError, match="namespace must be"):
        Deployment(bad)
