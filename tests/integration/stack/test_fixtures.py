"""The shared fixtures give each test a working broker, Redis and namespace."""

from __future__ import annotations

import pytest

from core.settings import Settings
from stack.tansu import probe_group_join
from streams.topics import TopicNames


@pytest.mark.integration
def test_make_topics_creates_namespace_topics_idempotently(settings: Settings, make_topics) -> None:
    from confluent_kafka.admin import AdminClient

    first = make_topics(settings)
    again = make_topics(settings)

    assert first == again == list(TopicNames.for_settings(settings).all())
    metadata = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers}).list_topics(
        timeout=10
    )
    for name in first:
        assert name in metadata.topics
        assert len(metadata.topics[name].partitions) == settings.kafka.partitions


@pytest.mark.integration
def test_broker_round_trip_with_fast_session_timeout(settings: Settings, make_topics) -> None:
    make_topics(settings)

    probe = probe_group_join(
        settings.kafka.bootstrap_servers,
        settings.topic("events"),
        session_timeout_ms=settings.kafka.session_timeout_ms,
        messages=5,
    )

    assert probe.messages == 5


@pytest.mark.integration
def test_settings_fixture_points_at_fixture_services(
    settings: Settings, namespace: str, kafka_bootstrap: str, redis_url: str, milvus_uri: str
) -> None:
    import redis

    assert settings.namespace == namespace
    assert settings.kafka.bootstrap_servers == kafka_bootstrap
    assert settings.redis.url.get_secret_value() == redis_url
    assert settings.milvus.uri == milvus_uri
    client = redis.Redis.from_url(redis_url)
    client.set(settings.redis_key("fixture-check"), b"1")
    assert client.get(settings.redis_key("fixture-check")) == b"1"
    client.close()


@pytest.mark.integration
def test_namespaces_are_unique_per_test(namespace: str) -> None:
    assert namespace.startswith("t") and len(namespace) == 13
