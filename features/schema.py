"""Feature names and the mapping between feature rows and flat feature records.

Pure logic (no Feast, no Redis): the Feast definitions (``features.repo.definitions``), the online
store adapter and the offline feature history all take their column names from here, so a row
written by the stream processors reads back identically from every store.

A *record* is a flat ``dict`` of feature name → plain Python value, one per entity, which is what
Feast feature views hold. ``UserFeatureRow.activity_counts`` is a dict in the row but a fixed set
of ``Int64`` features in Feast: ``{event_type}_{window}`` for every event type in
``events.models.EventType`` and every window in ``ACTIVITY_WINDOWS`` (e.g. ``click_24h``). A count
that the row does not carry is stored as null, so ``{}`` and ``{"click_24h": 0}`` stay distinct.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.errors import SchemaError
from events.models import EVENT_TYPES
from features.rows import ItemFeatureRow, UserFeatureRow

USER_ENTITY = "user"
ITEM_ENTITY = "item"
USER_JOIN_KEY = "user_id"
ITEM_JOIN_KEY = "item_id"
USER_VIEW = "user_features"
ITEM_VIEW = "item_features"
USER_PUSH_SOURCE = "user_features_push"
ITEM_PUSH_SOURCE = "item_features_push"

# Offline columns Feast's file sources use: the event time of the row and a tie-breaker for rows
# sharing one event time (the later-written row wins, as online).
EVENT_TIMESTAMP = "event_timestamp"
CREATED_TIMESTAMP = "created_timestamp"

# Event-time windows of the activity counts, as name -> milliseconds.
ACTIVITY_WINDOWS: dict[str, int] = {
    "1h": 3_600_000,
    "24h": 86_400_000,
    "7d": 7 * 86_400_000,
}
ACTIVITY_COUNT_FEATURES: tuple[str, ...] = tuple(
    f"{event_type}_{window}" for event_type in EVENT_TYPES for window in ACTIVITY_WINDOWS
)

# Feature name -> logical type; the Feast definitions translate these into Feast types.
# "event_time_ms" is stored as a feature too so that every store returns the row's own event time.
USER_FEATURE_TYPES: dict[str, str] = {
    "event_time_ms": "int64",
    "recent_items": "string_list",
    "dismissed_items": "string_list",
    "recent_interactions": "string_list",
    **{name: "int64" for name in ACTIVITY_COUNT_FEATURES},
}
ITEM_FEATURE_TYPES: dict[str, str] = {
    "event_time_ms": "int64",
    "popularity": "float64",
    "popularity_time_ms": "int64",
    "impressions": "int64",
    "clicks": "int64",
    "ctr": "float64",
    "created_time_ms": "int64",
    "title": "string",
    "categories": "string_list",
    "available": "bool",
}
USER_FEATURES: tuple[str, ...] = tuple(USER_FEATURE_TYPES)
ITEM_FEATURES: tuple[str, ...] = tuple(ITEM_FEATURE_TYPES)

# Constants of the item feature definitions (features/FEATURES.md). ``streams.item_features``
# computes the features with them; readers need them too (serving decays ``popularity`` from the
# row's ``popularity_time_ms`` to its own time with the half-life).
POPULARITY_HALF_LIFE_MS = 24 * 3_600_000
POPULARITY_HORIZON_MS = 14 * 24 * 3_600_000
POPULARITY_EVENT_WEIGHTS: dict[str, int] = {
    "view": 1,
    "click": 2,
    "rating": 1,
    "add_to_cart": 3,
    "purchase": 4,
    "dismiss": 0,
}
CTR_PRIOR_CLICKS = 1.0  # Beta(1, 19) prior on the click-through rate: mean 5 %
CTR_PRIOR_NON_CLICKS = 19.0


def user_row_to_record(row: UserFeatureRow) -> dict[str, Any]:
    """Flatten a user row; raises ``SchemaError`` for an activity count with no feature."""
    unknown = set(row.activity_counts) - set(ACTIVITY_COUNT_FEATURES)
    if unknown:
        raise SchemaError(
            f"user {row.user_id!r}: activity counts {sorted(unknown)} are not defined features "
            f"(expected names like {ACTIVITY_COUNT_FEATURES[0]!r})",
            reason="unknown_feature",
        )
    record: dict[str, Any] = {
        "event_time_ms": row.event_time_ms,
        "recent_items": list(row.recent_items),
        "dismissed_items": list(row.dismissed_items),
        "recent_interactions": list(row.recent_interactions),
    }
    for name in ACTIVITY_COUNT_FEATURES:
        record[name] = row.activity_counts.get(name)
    return record


def user_record_to_row(user_id: str, record: Mapping[str, Any]) -> UserFeatureRow:
    return UserFeatureRow(
        user_id=user_id,
        event_time_ms=int(record["event_time_ms"]),
        recent_items=_strings(record.get("recent_items")),
        dismissed_items=_strings(record.get("dismissed_items")),
        activity_counts={
            name: int(record[name])
            for name in ACTIVITY_COUNT_FEATURES
            if _present(record.get(name))
        },
        recent_interactions=_strings(record.get("recent_interactions")),
    )


def item_row_to_record(row: ItemFeatureRow) -> dict[str, Any]:
    return {
        "event_time_ms": row.event_time_ms,
        "popularity": float(row.popularity),
        "popularity_time_ms": row.popularity_time_ms,
        "impressions": row.impressions,
        "clicks": row.clicks,
        "ctr": float(row.ctr),
        "created_time_ms": row.created_time_ms,
        "title": row.title,
        "categories": list(row.categories),
        "available": bool(row.available),
    }


def item_record_to_row(item_id: str, record: Mapping[str, Any]) -> ItemFeatureRow:
    created = record.get("created_time_ms")
    title = record.get("title")
    return ItemFeatureRow(
        item_id=item_id,
        event_time_ms=int(record["event_time_ms"]),
        popularity=_number(record.get("popularity"), float, 0.0),
        popularity_time_ms=_number(record.get("popularity_time_ms"), int, None),
        impressions=_number(record.get("impressions"), int, 0),
        clicks=_number(record.get("clicks"), int, 0),
        ctr=_number(record.get("ctr"), float, 0.0),
        created_time_ms=_number(created, int, None),
        title=str(title) if _present(title) else "",
        categories=_strings(record.get("categories")),
        available=_bool(record.get("available"), default=True),
    )


def _present(value: Any) -> bool:
    """True unless the value is missing: ``None`` or a pandas/NumPy NaN from an offline frame."""
    return value is not None and value == value  # NaN != NaN


def _strings(value: Any) -> tuple[str, ...]:
    """A list feature as a tuple of ``str``; null (or a NaN from a frame) is the empty tuple."""
    if value is None or isinstance(value, float):
        return ()
    return tuple(str(item) for item in value)


def _number(value: Any, kind: type, default: Any) -> Any:
    return kind(value) if _present(value) else default


def _bool(value: Any, *, default: bool) -> bool:
    return bool(value) if _present(value) else default
