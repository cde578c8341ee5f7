"""Pydantic v2 models of every topic's payload. Frozen, timezone-aware, strict about ids.

Event time is accepted as RFC 3339 with an offset or as integer epoch milliseconds and is held
as an aware UTC ``datetime``; ``event_time_ms`` gives the integer form that all state uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from functools import cached_property
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    field_validator,
)

Id = Annotated[str, StringConstraints(min_length=1, max_length=128)]
# Accepted on the wire as RFC 3339 with an offset, or as integer epoch milliseconds.
EventTime = Annotated[
    datetime,
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "format": "date-time"},
                {"type": "integer", "description": "epoch milliseconds"},
            ]
        }
    ),
]

# Events before 1990 or after 2200 are almost surely unit mistakes (seconds vs ms, µs).
MIN_EVENT_TIME_MS = 631_152_000_000  # 1990-01-01T00:00:00Z
MAX_EVENT_TIME_MS = 7_258_118_400_000  # 2200-01-01T00:00:00Z


class EventType(StrEnum):
    VIEW = "view"
    CLICK = "click"
    ADD_TO_CART = "add_to_cart"
    PURCHASE = "purchase"
    RATING = "rating"
    DISMISS = "dismiss"


EVENT_TYPES: tuple[str, ...] = tuple(t.value for t in EventType)
# Each member's value, for per-event code: a dict lookup, where ``.value`` is a Python-level
# descriptor call (``enum.property``).
EVENT_TYPE_NAMES: dict[EventType, str] = {t: t.value for t in EventType}
POSITIVE_TYPES = frozenset({EventType.CLICK, EventType.ADD_TO_CART, EventType.PURCHASE})


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_epoch_ms(moment: datetime) -> int:
    """Whole milliseconds since the epoch, floored (timedelta's normalised fields: exact)."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000 + delta.microseconds // 1_000


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = datetime(1970, 1, 1, 0, 0, 0, 1000, tzinfo=UTC) - _EPOCH


def from_epoch_ms(ms: int) -> datetime:
    return _EPOCH + ms * _MS


def _parse_event_time(value: Any) -> datetime:
    if isinstance(value, bool):
        raise ValueError("event_time must be RFC 3339 with offset or integer epoch milliseconds")
    if isinstance(value, int):
        ms = value
    elif isinstance(value, float) and value.is_integer():
        ms = int(value)
    elif isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("event_time must carry a UTC offset")
        ms = to_epoch_ms(value)
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("z", "Z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError as exc:
            raise ValueError(f"event_time {value!r} is not RFC 3339") from exc
        if parsed.tzinfo is None:
            raise ValueError(f"event_time {value!r} has no UTC offset")
        ms = to_epoch_ms(parsed)
    else:
        raise ValueError("event_time must be RFC 3339 with offset or integer epoch milliseconds")
    if not MIN_EVENT_TIME_MS <= ms < MAX_EVENT_TIME_MS:
        raise ValueError(
            f"event_time {value!r} is outside 1990..2200; epoch values are milliseconds"
        )
    return from_epoch_ms(ms)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=False)


class _Timed(_Model):
    event_time: EventTime = Field(
        description="When it happened: RFC 3339 with offset, or integer epoch milliseconds."
    )

    @field_validator("event_time", mode="before")
    @classmethod
    def _event_time(cls, value: Any) -> datetime:
        return _parse_event_time(value)

    @cached_property
    def event_time_ms(self) -> int:
        """Cached: every stream step reads it, several times per event (pydantic's equality,
        dumps and hashing ignore it)."""
        return to_epoch_ms(self.event_time)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        copied = super().model_copy(update=update, deep=deep)
        if update and "event_time" in update:
            copied.__dict__.pop("event_time_ms", None)
        return copied


class Interaction(_Timed):
    """One user-item interaction on the events topic (key = ``user_id``)."""

    event_id: Id = Field(description="Unique per event; the de-duplication key.")
    event_type: EventType
    user_id: Id
    item_id: Id
    value: float | None = Field(
        default=None, allow_inf_nan=False, description="Rating value, price, watch fraction."
    )
    request_id: Id | None = Field(default=None, description="The slate this came from.")
    context: dict[
        Annotated[str, StringConstraints(max_length=64)],
        Annotated[str, StringConstraints(max_length=256)],
    ] = Field(default_factory=dict, max_length=32, description="device, surface, locale …")
    schema_version: Literal[1] = 1


class CatalogItem(_Timed):
    """A catalogue update on the items topic (key = ``item_id``); ``event_time`` is the update time."""

    event_id: Id
    item_id: Id
    title: Annotated[str, StringConstraints(max_length=1024)] = ""
    categories: tuple[Annotated[str, StringConstraints(min_length=1, max_length=128)], ...] = Field(
        default=(), max_length=64
    )
    created_time: EventTime | None = Field(
        default=None, description="When the item entered the catalogue (defaults to event_time)."
    )
    available: bool = True
    schema_version: Literal[1] = 1

    @field_validator("created_time", mode="before")
    @classmethod
    def _created_time(cls, value: Any) -> datetime | None:
        return None if value is None else _parse_event_time(value)


class PrivacyAction(StrEnum):
    OPT_OUT = "opt_out"
    OPT_IN = "opt_in"
    DELETE = "delete"


class PrivacyRequest(_Timed):
    """A privacy event on the privacy topic (key = ``user_id``)."""

    event_id: Id
    user_id: Id
    action: PrivacyAction
    schema_version: Literal[1] = 1


class ImpressionItem(_Model):
    item_id: Id
    position: int = Field(ge=0)
    score: float
    source: str
    propensity: float = Field(ge=0.0, le=1.0)


class Impression(_Timed):
    """One served slate on the impressions topic (key = ``user_id``), for attribution and OPE."""

    request_id: Id
    user_id: Id
    items: tuple[ImpressionItem, ...]
    model_version: str
    experiment_arm: str = ""
    fallback: bool = False
    context: dict[str, str] = Field(default_factory=dict)
    schema_version: Literal[1] = 1


class DriftDetection(_Timed):
    """One drift detection on the drift topic (key = ``signal``), written by the stream worker.

    ``event_time`` is the detected-at event time: the event time of the observation whose
    detector update raised the alarm. Replaying the same log yields the same detections with the
    same ``detection_id``, so consumers de-duplicate on it.
    """

    detection_id: Id = Field(description="Deterministic: signal, segment and detected-at time.")
    signal: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(
        description="What is monitored, e.g. ctr, event_share, exposure_decile_js, top_score."
    )
    segment: Annotated[str, StringConstraints(min_length=1, max_length=128)] = Field(
        description="Which slice: all, arm=<arm>, source=<source>, event_type=<type>."
    )
    detector: Annotated[str, StringConstraints(min_length=1, max_length=128)] = Field(
        description="The river detector and its parameters, e.g. ADWIN(delta=0.002,clock=1)."
    )
    statistic: float = Field(
        allow_inf_nan=False, description="The monitored statistic's estimate after the change."
    )
    reference: float = Field(
        allow_inf_nan=False, description="The same statistic's estimate before the change."
    )
    window_start: EventTime = Field(description="Start of the event-time window (inclusive).")
    window_end: EventTime = Field(description="End of the event-time window (exclusive).")
    schema_version: Literal[1] = 1

    @field_validator("window_start", "window_end", mode="before")
    @classmethod
    def _window_bounds(cls, value: Any) -> datetime:
        return _parse_event_time(value)

    @property
    def window_start_ms(self) -> int:
        return to_epoch_ms(self.window_start)

    @property
    def window_end_ms(self) -> int:
        return to_epoch_ms(self.window_end)
