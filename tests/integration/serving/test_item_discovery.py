"""The online item scan against real Redis and Feast's layout: exactly this namespace's items."""

from __future__ import annotations

import pytest
import redis

from core.settings import Settings
from features.rows import ItemFeatureRow, UserFeatureRow
from features.store import FeastOnlineStore
from serving.item_discovery import OnlineItemScanner
from stack.redis_server import delete_namespace_keys

pytestmark = pytest.mark.integration


def test_the_scan_finds_this_namespaces_item_rows_and_nothing_else(settings: Settings) -> None:
    # A namespace whose name ends with ours: its keys match the glob, and must be told apart.
    longer = settings.model_copy(update={"namespace": f"x{settings.namespace}"})
    ours = FeastOnlineStore(settings.redis, settings.deployment)
    theirs = FeastOnlineStore(longer.redis, longer.deployment)
    odd_ids = ["plain", "with space", "ünïcode", "star*and?[brackets]", "x" * 128]
    try:
        ours.write_items([ItemFeatureRow(i, 1, popularity=1.0) for i in odd_ids])
        ours.write_users([UserFeatureRow("a-user", 1, recent_items=("plain",))])
        theirs.write_items([ItemFeatureRow("foreign", 1)])
        client = redis.Redis.from_url(settings.redis.url.get_secret_value())
        scanner = OnlineItemScanner(client, settings.deployment, batch=3)
        assert scanner.scan() == sorted(odd_ids)
        client.close()
    finally:
        ours.close()
        theirs.close()
        delete_namespace_keys(settings.redis.url.get_secret_value(), longer.namespace)
