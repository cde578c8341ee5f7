"""Feast definitions: entities ``user`` and ``item``, feature views ``user_features`` and
``item_features``, one push source per view (stream writes) backed by a parquet file source
(the offline feature history, for point-in-time training data).

The definitions depend on where a deployment keeps its offline data, so they are built by
``build_repo(history_dir)`` rather than held as module globals; ``features.store.apply_repo`` applies
them (the programmatic equivalent of ``feast apply``). Feature names and their meaning come from
``features.schema`` and ``features/FEATURES.md``.

Feature views have ``ttl=0`` (features never expire): a user's recent items stay valid however
long ago the user was last seen; freshness is the stream processors' business, via event time.

A frame pushed to a push source (``FeatureStore.push``) needs the join key, ``event_timestamp``,
``created_timestamp`` and every feature column. The project's own writers do not push: they go
through ``features.store.FeastOnlineStore``, which writes the same Redis layout atomically and
lets a later row with an equal event time win (Feast's own writer drops it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from feast import Entity, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Array, Bool, Float64, Int64, PrimitiveFeastType, String

from features.schema import (
    CREATED_TIMESTAMP,
    EVENT_TIMESTAMP,
    ITEM_ENTITY,
    ITEM_FEATURE_TYPES,
    ITEM_JOIN_KEY,
    ITEM_PUSH_SOURCE,
    ITEM_VIEW,
    USER_ENTITY,
    USER_FEATURE_TYPES,
    USER_JOIN_KEY,
    USER_PUSH_SOURCE,
    USER_VIEW,
)

_FEAST_TYPES: dict[str, object] = {
    "int64": Int64,
    "float64": Float64,
    "string": String,
    "bool": Bool,
    "string_list": Array(String),
}


@dataclass(frozen=True)
class FeatureRepo:
    """Every Feast object of the repository, ready for ``FeatureStore.apply``."""

    user: Entity
    item: Entity
    user_features: FeatureView
    item_features: FeatureView
    user_push: PushSource
    item_push: PushSource

    @property
    def objects(self) -> list[Any]:
        return [
            self.user,
            self.item,
            self.user_push,
            self.item_push,
            self.user_features,
            self.item_features,
        ]

    @property
    def views(self) -> dict[str, FeatureView]:
        return {
            self.user_features.name: self.user_features,
            self.item_features.name: self.item_features,
        }


def history_path(history_dir: Path, view: str) -> Path:
    """Folder of parquet files holding one view's feature history (``features.offline``)."""
    return history_dir / view


def build_repo(history_dir: Path) -> FeatureRepo:
    user = Entity(
        name=USER_ENTITY,
        join_keys=[USER_JOIN_KEY],
        value_type=ValueType.STRING,
        description="An end user, keyed by the events' user_id.",
    )
    item = Entity(
        name=ITEM_ENTITY,
        join_keys=[ITEM_JOIN_KEY],
        value_type=ValueType.STRING,
        description="A catalogue item, keyed by the events' item_id.",
    )
    user_push = _push_source(USER_PUSH_SOURCE, history_path(history_dir, USER_VIEW))
    item_push = _push_source(ITEM_PUSH_SOURCE, history_path(history_dir, ITEM_VIEW))
    user_features = FeatureView(
        name=USER_VIEW,
        entities=[user],
        ttl=timedelta(0),
        schema=[Field(name=USER_JOIN_KEY, dtype=String), *_fields(USER_FEATURE_TYPES)],
        source=user_push,
        online=True,
        description="Per-user stream features: recent items, dismissals, activity counts.",
    )
    item_features = FeatureView(
        name=ITEM_VIEW,
        entities=[item],
        ttl=timedelta(0),
        schema=[Field(name=ITEM_JOIN_KEY, dtype=String), *_fields(ITEM_FEATURE_TYPES)],
        source=item_push,
        online=True,
        description="Per-item stream and catalogue features: popularity, CTR, freshness.",
    )
    return FeatureRepo(user, item, user_features, item_features, user_push, item_push)


def _push_source(name: str, folder: Path) -> PushSource:
    batch = FileSource(
        name=f"{name}_history",
        path=str(folder.resolve()),
        timestamp_field=EVENT_TIMESTAMP,
        created_timestamp_column=CREATED_TIMESTAMP,
    )
    return PushSource(name=name, batch_source=batch)


def _fields(types: dict[str, str]) -> list[Field]:
    fields = []
    for name, kind in types.items():
        dtype = _FEAST_TYPES[kind]
        assert isinstance(dtype, (PrimitiveFeastType, Array))
        fields.append(Field(name=name, dtype=dtype))
    return fields
