"""An exact fast path for decoding ``<ns>.events`` payloads; everything else goes to ``events``.

``events.decode_interaction`` parses with the standard library's ``json`` and validates with
pydantic: about 18 µs per event here, paid once by the feature step and once more by attribution
before this module (``docs/benchmarks/ingest.md``). :func:`decode_interaction` parses with orjson
and, when the payload has the common plain shape — only known fields, strings within their
limits, ``event_type`` one of the types, ``event_time`` integer epoch milliseconds in range, a
finite number or null ``value``, a small string map ``context``, ``schema_version`` 1 — builds
the same frozen ``Interaction`` that validation builds (same field values and order, same
``model_fields_set``). Anything else (RFC 3339 times, a float time, a bool where a number goes,
odd JSON that orjson refuses, any invalid payload) is handed to ``events.decode_interaction``, so
what is rejected, and with which reason, is exactly what the validated path says.

``tests/unit/streams/test_fast_decode.py`` holds the two paths equal with hypothesis.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from events import decode_interaction as validated_interaction
from events.codec import DEFAULT_MAX_BYTES
from events.models import (
    MAX_EVENT_TIME_MS,
    MIN_EVENT_TIME_MS,
    EventType,
    Interaction,
    from_epoch_ms,
)

_FIELDS = frozenset(Interaction.model_fields)
_REQUIRED = frozenset(name for name, f in Interaction.model_fields.items() if f.is_required())
_TYPES = {t.value: t for t in EventType}
_ID_MAX = 128
_CONTEXT_ENTRIES, _CONTEXT_KEY_MAX, _CONTEXT_VALUE_MAX = 32, 64, 256
_EXACT_FLOAT_INT = 2**53  # ints up to here convert to float the same way everywhere
_new = object.__new__
_set = object.__setattr__


def decode_interaction(raw: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Interaction:
    """``events.decode_interaction``, faster for the plain shape; same result, same errors."""
    if type(raw) is bytes and len(raw) <= max_bytes:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            data = None
        if type(data) is dict:
            event = _plain_interaction(data)
            if event is not None:
                return event
    return validated_interaction(raw, max_bytes=max_bytes)


def _plain_interaction(data: dict[str, Any]) -> Interaction | None:
    """The model validation would build from ``data``, or None where this path is not sure."""
    keys = data.keys()
    if not (_REQUIRED <= keys <= _FIELDS):
        return None
    event_id, user_id, item_id = data["event_id"], data["user_id"], data["item_id"]
    if not (_is_id(event_id) and _is_id(user_id) and _is_id(item_id)):
        return None
    event_type = _TYPES.get(data["event_type"]) if type(data["event_type"]) is str else None
    t = data["event_time"]
    if event_type is None or type(t) is not int or not MIN_EVENT_TIME_MS <= t < MAX_EVENT_TIME_MS:
        return None
    value = data.get("value")
    if value is not None:
        if type(value) is int and -_EXACT_FLOAT_INT <= value <= _EXACT_FLOAT_INT:
            value = float(value)
        elif type(value) is not float or not math.isfinite(value):
            return None
    request_id = data.get("request_id")
    if request_id is not None and not _is_id(request_id):
        return None
    context = data.get("context", _ABSENT)
    if context is _ABSENT:
        context = {}
    elif not _is_context(context):
        return None
    else:
        context = dict(context)
    version = data.get("schema_version", 1)
    if type(version) is not int or version != 1:
        return None
    event = _new(Interaction)
    _set(
        event,
        "__dict__",
        {  # the model's field order, as validation fills it
            "event_time": from_epoch_ms(t),
            "event_id": event_id,
            "event_type": event_type,
            "user_id": user_id,
            "item_id": item_id,
            "value": value,
            "request_id": request_id,
            "context": context,
            "schema_version": 1,
            "event_time_ms": t,  # the cached property, filled (equality and dumps ignore it)
        },
    )
    _set(event, "__pydantic_fields_set__", set(keys))
    _set(event, "__pydantic_extra__", None)
    _set(event, "__pydantic_private__", None)
    return event


_ABSENT: Any = object()


def _is_id(value: object) -> bool:
    return type(value) is str and 0 < len(value) <= _ID_MAX


def _is_context(value: object) -> bool:
    if type(value) is not dict or len(value) > _CONTEXT_ENTRIES:
        return False
    return all(
        type(k) is str
        and len(k) <= _CONTEXT_KEY_MAX
        and type(v) is str
        and len(v) <= _CONTEXT_VALUE_MAX
        for k, v in value.items()
    )
