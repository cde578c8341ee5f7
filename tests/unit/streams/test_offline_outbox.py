"""The offline outbox (``streams.sinks``): a batch's offline rows ride on its state commit, and a
flush moves many batches into one parquet file per log, at-least-once across a crash, and never
after an erasure of their user. Real parquet folders, the in-memory state store port."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from core.errors import DependencyUnavailable
from core.settings import Settings
from events.models import Impression, ImpressionItem, Interaction
from features.batch_folder import BatchFolder, folder_usage
from features.offline import EVENT_LOG_SCHEMA, FeatureHistory, OfflineEventLog
from features.offline_impressions import OfflineImpressionLog
from features.rows import ItemFeatureRow, UserFeatureRow
from streams.sinks import OUTBOXES, StreamSinks
from streams.state_port import InMemoryStateStore, StateCommit

T = 1_700_000_000_000


def event(n: int, user: str = "u1") -> Interaction:
    return Interaction(
        event_id=f"e{n}", event_type="click", user_id=user, item_id=f"i{n}", event_time=T + n
    )


def slate(n: int, user: str = "u1") -> Impression:
    item = ImpressionItem(item_id="i1", position=0, score=1.0, source="ann", propensity=1.0)
    return Impression(
        request_id=f"r{n}", user_id=user, event_time=T + n, model_version="m1", items=(item,)
    )


@pytest.fixture
def sinks(tmp_path: Path) -> StreamSinks:
    deployment = Settings(namespace="outbox_test", data_dir=tmp_path).deployment
    return StreamSinks(
        OfflineEventLog(deployment), FeatureHistory(deployment), OfflineImpressionLog(deployment)
    )


def commit_batches(sinks: StreamSinks, store: InMemoryStateStore, batches: int) -> None:
    for b in range(batches):
        events = [event(10 * b + k, user=f"u{k % 2}") for k in range(3)]
        rows = [UserFeatureRow(e.user_id, e.event_time_ms, (e.item_id,)) for e in events]
        rows.append(ItemFeatureRow(f"i{b}", T + b, clicks=b))
        entries = sinks.entries(events, rows, [slate(b, user=f"u{b % 2}")])
        assert set(entries) == set(OUTBOXES)
        store.commit(StateCommit(offline=entries))


def test_batches_wait_in_the_outbox_and_a_flush_writes_them_as_one_file_per_log(sinks) -> None:
    store = InMemoryStateStore()
    commit_batches(sinks, store, 20)
    assert not sinks.event_log.folder.exists()  # nothing in parquet before the flush
    flushed_before = flushed_rows("events")
    assert sinks.flush(store) == 20 * (3 + 3 + 1 + 1)
    assert flushed_rows("events") - flushed_before == 60  # aether_offline_rows_flushed_total
    assert all(not entries for entries in store.offline.values())
    events = sinks.event_log.read()
    assert len(events) == 60 and list(events.event_id) == sorted(
        events.event_id, key=lambda e: int(e[1:])
    )
    assert folder_usage(sinks.event_log.folder).files == 1
    assert sinks.impressions is not None and len(sinks.impressions.read()) == 20
    users = sinks.history.read("user_features")
    assert len(users) == 60 and users.created_timestamp.is_monotonic_increasing
    assert list(sinks.history.read("item_features").clicks) == list(range(20))
    assert sinks.flush(store) == 0  # nothing left


def flushed_rows(outbox: str) -> float:
    value = REGISTRY.get_sample_value("aether_offline_rows_flushed_total", {"outbox": outbox})
    return value or 0.0


class FailingDrops(InMemoryStateStore):
    """A worker that dies after writing parquet, before it removes the entries."""

    def drop_offline(self, outbox: str, entry_ids) -> None:
        raise DependencyUnavailable("redis", "gone")


def test_a_flush_that_stops_before_removing_its_entries_writes_them_again_and_reads_once(
    sinks,
) -> None:
    store = FailingDrops()
    commit_batches(sinks, store, 5)
    with pytest.raises(DependencyUnavailable):
        sinks.flush(store)
    healthy = InMemoryStateStore()
    healthy.offline = store.offline  # the entries are still there
    sinks.flush(healthy)
    raw = BatchFolder(sinks.event_log.folder, EVENT_LOG_SCHEMA).read()  # no de-duplication
    assert raw.num_rows == 2 * 15  # the events' rows, twice
    assert sorted(sinks.event_log.read().event_id) == sorted(
        f"e{10 * b + k}" for b in range(5) for k in range(3)
    )
    assert sinks.impressions is not None and len(sinks.impressions.read()) == 5


def test_an_erasure_flushes_first_so_no_row_of_the_user_reaches_parquet_after_it(sinks) -> None:
    store = InMemoryStateStore()
    commit_batches(sinks, store, 4)  # rows of u0 and u1, all still in the outbox
    sinks.erase_user("u1", store)
    assert all(not entries for entries in store.offline.values())
    sinks.flush(store)
    assert set(sinks.event_log.read().user_id) == {"u0"}
    assert set(sinks.history.read("user_features").user_id) == {"u0"}
    assert sinks.impressions is not None
    assert set(sinks.impressions.read().user_id) == {"u0"}
