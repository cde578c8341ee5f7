"""Point-in-time features through Feast's historical retrieval: strictly before each request."""

from __future__ import annotations

import pandas as pd
import pytest

from core.settings import Settings
from features.offline import FeatureHistory, point_in_time_features
from features.rows import ItemFeatureRow, UserFeatureRow
from features.store import apply_repo

pytestmark = pytest.mark.integration

T = 1_700_000_000_000


def at(*ms: int) -> pd.Series:
    return pd.Series(pd.to_datetime(list(ms), unit="ms", utc=True))


def values(column: pd.Series) -> list[object]:
    return [None if pd.isna(v) else v for v in column]


def test_no_row_at_or_after_the_request_time_is_visible(settings: Settings) -> None:
    store = apply_repo(settings.redis, settings.deployment)
    FeatureHistory(settings.deployment).append(
        [
            UserFeatureRow("u1", T - 5_000, ("past",)),
            UserFeatureRow("u1", T, ("at-t",)),  # event time == t: must NOT be visible at t
            UserFeatureRow("u1", T + 5_000, ("future",)),
        ]
    )
    requests = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u1", "u1"],
            "event_timestamp": at(T, T - 5_000, T + 1, T + 10_000),
        }
    )
    result = point_in_time_features(settings.redis, settings.deployment, requests, store=store)
    assert [list(v) if v is not None else None for v in result.user_features__recent_items] == [
        ["past"],
        None,
        ["at-t"],
        ["future"],
    ]
    pd.testing.assert_series_equal(result.event_timestamp, requests.event_timestamp)


def test_sub_millisecond_request_times_keep_the_strict_boundary(settings: Settings) -> None:
    store = apply_repo(settings.redis, settings.deployment)
    FeatureHistory(settings.deployment).append([UserFeatureRow("u1", T, ("at-t",))])
    requests = pd.DataFrame(
        {
            "user_id": ["u1", "u1"],
            "event_timestamp": [
                pd.Timestamp(T * 1_000_000 - 1, tz="UTC"),
                pd.Timestamp(T * 1_000_000 + 1, tz="UTC"),
            ],
        }
    )
    result = point_in_time_features(settings.redis, settings.deployment, requests, store=store)
    assert result.user_features__event_time_ms.isna().iloc[0]
    assert result.user_features__event_time_ms.iloc[1] == T


def test_user_and_item_features_together_in_request_order(settings: Settings) -> None:
    store = apply_repo(settings.redis, settings.deployment)
    history = FeatureHistory(settings.deployment)
    history.append(
        [
            UserFeatureRow("u2", T - 10, activity_counts={"click_24h": 7}),
            ItemFeatureRow("i1", T - 20, clicks=3, created_time_ms=T - 99),
            ItemFeatureRow("i1", T - 10, clicks=4, created_time_ms=T - 99),
        ]
    )
    # Written later with the same event time: this one wins.
    history.append([UserFeatureRow("u2", T - 10, activity_counts={"click_24h": 8})])
    requests = pd.DataFrame(
        {
            "user_id": ["u2", "nobody", "u2"],
            "item_id": ["i1", "i1", "zz"],
            "event_timestamp": at(T, T - 15, T),
        }
    )
    result = point_in_time_features(settings.redis, settings.deployment, requests, store=store)
    assert list(result.user_id) == ["u2", "nobody", "u2"]
    assert values(result.user_features__click_24h) == [8, None, 8]
    assert values(result.item_features__clicks) == [4, 3, None]
    assert result.item_features__created_time_ms.iloc[0] == T - 99


def test_without_any_history_every_feature_is_null(settings: Settings) -> None:
    store = apply_repo(settings.redis, settings.deployment)
    requests = pd.DataFrame({"item_id": ["i1"], "event_timestamp": at(T)})
    result = point_in_time_features(settings.redis, settings.deployment, requests, store=store)
    assert result.item_features__popularity.isna().all()
    assert "user_features__recent_items" not in result


def test_a_compacted_history_with_a_crashed_merges_leftovers_joins_the_same(
    settings: Settings,
) -> None:
    """Merged files, and the inputs a merge crashed before removing (Feast reads the folder
    whole, so it reads those rows twice): the point-in-time answers are those of the rows."""
    from features.batch_folder import BatchFolder, Compaction
    from features.offline import USER_HISTORY_SCHEMA
    from features.schema import USER_VIEW
    from features.store import feature_history_dir

    store = apply_repo(settings.redis, settings.deployment)
    history = FeatureHistory(settings.deployment)
    for n in range(11):  # batches 1-8 merged after the eighth (fanout 8), 9-11 single files
        history.append([UserFeatureRow("u1", T + n * 1_000, activity_counts={"click_24h": n})])
    folder = feature_history_dir(settings.deployment) / USER_VIEW
    assert [p.name for p in BatchFolder(folder, USER_HISTORY_SCHEMA).files()] == [
        "0000000001-0000000008.parquet",
        *(f"{n:010d}.parquet" for n in (9, 10, 11)),
    ]
    # A further merge published, inputs 9-11 still there (as a crash before their removal).
    kept = {n: (folder / f"{n:010d}.parquet").read_bytes() for n in (9, 10, 11)}
    merged = BatchFolder(folder, USER_HISTORY_SCHEMA, Compaction(fanout=2)).compact()
    assert merged is not None and merged.name.endswith("-0000000011.parquet")
    for n, raw in kept.items():
        (folder / f"{n:010d}.parquet").write_bytes(raw)
    assert len(history.read(USER_VIEW)) == 11  # the reader ignores the covered inputs
    requests = pd.DataFrame(
        {"user_id": ["u1"] * 4, "event_timestamp": at(T, T + 1, T + 3_500, T + 60_000)}
    )
    result = point_in_time_features(settings.redis, settings.deployment, requests, store=store)
    assert values(result.user_features__click_24h) == [None, 0, 3, 10]
