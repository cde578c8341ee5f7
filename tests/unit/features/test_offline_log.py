"""The parquet event log and feature history (local files only, no Feast join)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from core.errors import DependencyUnavailable, SchemaError
from core.settings import Settings
from events.models import Interaction
from features.offline import FeatureHistory, OfflineEventLog, point_in_time_features
from features.rows import ItemFeatureRow, UserFeatureRow

T = 1_700_000_000_000


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(namespace="offline_test", data_dir=tmp_path)


def event(event_id: str, user_id: str = "u1", t: int = T, **extra: object) -> Interaction:
    return Interaction(
        event_id=event_id, event_type="click", user_id=user_id, item_id="i1", event_time=t, **extra
    )


def test_events_append_one_file_per_batch_and_read_in_event_time_order(settings: Settings) -> None:
    log = OfflineEventLog(settings.deployment)
    first = log.append([event("b", t=T + 5), event("c", t=T, value=4.5, context={"device": "tv"})])
    second = log.append([event("a", t=T)])
    assert log.append([]) is None
    assert first is not None and second is not None
    assert [first.name, second.name] == ["0000000001.parquet", "0000000002.parquet"]
    assert first.parent == settings.data_dir.resolve() / "offline" / "offline_test" / "events"
    frame = log.read()
    assert list(frame.event_id) == ["a", "c", "b"]  # by event time, then event id
    row = frame.set_index("event_id").loc["c"]
    assert (row.value, row.context, row.event_time_ms) == (4.5, '{"device": "tv"}', T)


def test_redelivered_events_are_read_once(settings: Settings) -> None:
    log = OfflineEventLog(settings.deployment)
    log.append([event("e1"), event("e2")])
    log.append([event("e1")])
    assert list(log.read().event_id) == ["e1", "e2"]


def test_read_filters_by_user_and_half_open_time_range(settings: Settings) -> None:
    log = OfflineEventLog(settings.deployment)
    log.append(
        [
            event("x", "u1", T - 1),
            event("y", "u1", T),
            event("z", "u2", T + 1),
            event("w", "u1", T + 1),
        ]
    )
    assert list(log.read(before_ms=T).event_id) == ["x"]  # strictly before
    assert list(log.read(start_ms=T, user_ids=["u1"]).event_id) == ["y", "w"]


def test_delete_user_removes_every_event_of_that_user_only(settings: Settings) -> None:
    log = OfflineEventLog(settings.deployment)
    log.append([event("a", "u1"), event("b", "u2")])
    log.append([event("c", "u1")])
    log.append([event("d", "u3")])
    assert log.delete_user("u1") == 2
    assert list(log.read().event_id) == ["b", "d"]
    assert log.delete_user("u1") == 0
    leftovers = [p.name for p in log.folder.iterdir() if p.name.startswith(".")]
    # no temporary file left, only the folder's locks
    assert sorted(leftovers) == [".lock", ".numbers.lock"]


def test_a_batch_number_taken_by_another_writer_is_skipped(settings: Settings) -> None:
    log = OfflineEventLog(settings.deployment)
    log.append([event("a")])
    (log.folder / "0000000002.parquet").write_bytes(
        (log.folder / "0000000001.parquet").read_bytes()
    )
    path = log.append([event("b")])
    assert path is not None and path.name == "0000000003.parquet"


def test_feature_history_keeps_rows_with_event_and_created_timestamps(settings: Settings) -> None:
    history = FeatureHistory(settings.deployment)
    history.append(
        [
            UserFeatureRow("u1", T, ("a",)),
            ItemFeatureRow("i1", T + 1, title="x"),
            UserFeatureRow("u2", T + 2, activity_counts={"view_1h": 2}),
        ]
    )
    history.append([UserFeatureRow("u1", T, ("a", "b"))])
    users = history.read("user_features")
    assert list(users.user_id) == ["u1", "u2", "u1"]
    assert users.event_timestamp.iloc[0].value == T * 1_000_000
    assert users.created_timestamp.is_monotonic_increasing  # write order breaks event-time ties
    assert users.view_1h.iloc[1] == 2
    assert list(history.read("item_features").title) == ["x"]
    assert history.delete_user("u1") == 2
    assert list(history.read("user_features").user_id) == ["u2"]


def test_point_in_time_needs_a_timestamp_and_an_entity_column(settings: Settings) -> None:
    with pytest.raises(SchemaError, match="event_timestamp"):
        point_in_time_features(
            settings.redis, settings.deployment, pd.DataFrame({"user_id": ["u1"]})
        )
    with pytest.raises(SchemaError, match="user_id"):
        point_in_time_features(
            settings.redis,
            settings.deployment,
            pd.DataFrame({"event_timestamp": [pd.Timestamp(T, unit="ms")]}),
        )


def test_a_corrupt_batch_file_is_reported_as_unavailable(settings: Settings) -> None:
    log = OfflineEventLog(settings.deployment)
    log.append([event("a")])
    (log.folder / "0000000002.parquet").write_bytes(b"not parquet")
    with pytest.raises(DependencyUnavailable, match="offline store"):
        log.read()


def test_a_writer_that_fell_behind_another_numbers_its_next_file_above_every_file(
    settings: Settings,
) -> None:
    ours, theirs = OfflineEventLog(settings.deployment), OfflineEventLog(settings.deployment)
    ours.append([event("a")])
    for n, event_id in enumerate(["b", "c", "d"]):
        path = theirs.append([event(event_id)])
        assert path is not None and path.name == f"{n + 2:010d}.parquet"
    path = ours.append([event("e")])
    assert path is not None and path.name == "0000000005.parquet"
    assert list(ours.read().event_id) == ["a", "b", "c", "d", "e"]


def test_a_redelivered_batch_is_read_once_and_the_first_copy_wins_across_merges(
    settings: Settings,
) -> None:
    log = OfflineEventLog(settings.deployment)
    log.append([event("e1", value=1.0), event("e2")])
    for n in range(3, 13):
        log.append([event(f"e{n}")])
    log.append([event("e1", value=2.0)])  # the same event id again, after a crash
    assert len(list(log.folder.glob("[0-9]*.parquet"))) < 12  # merged as they came
    frame = log.read()
    assert sorted(frame.event_id) == sorted(["e1", "e2", *(f"e{n}" for n in range(3, 13))])
    assert frame.set_index("event_id").loc["e1"].value == 1.0
    assert log.delete_user("u1") == 13 and log.read().empty
