"""JSON codecs for every topic. Decoding never raises anything but :class:`SchemaError`.

Reasons (``SchemaError.reason``) used for dead letters and metrics:
``too_large``, ``invalid_utf8``, ``invalid_json``, ``not_an_object``, ``missing_field``,
``unknown_event_type``, ``bad_event_time``, ``invalid_field``.
"""

from __future__ import annotations

import json
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from core.errors import SchemaError
from events.models import Interaction

M = TypeVar("M", bound=BaseModel)

DEFAULT_MAX_BYTES = 64 * 1024


def _reason(exc: ValidationError) -> str:
    first = exc.errors()[0]
    loc = first.get("loc", ())
    field = str(loc[0]) if loc else ""
    if first["type"] == "missing":
        return "missing_field"
    if field == "event_type":
        return "unknown_event_type"
    if field in ("event_time", "created_time"):
        return "bad_event_time"
    return "invalid_field"


def decode(raw: bytes | str, model: type[M], *, max_bytes: int = DEFAULT_MAX_BYTES) -> M:
    """Parse one Kafka value into ``model`` or raise ``SchemaError`` with a reason."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", errors="surrogatepass")
    if len(raw) > max_bytes:
        raise SchemaError(f"payload of {len(raw)} bytes exceeds {max_bytes}", reason="too_large")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SchemaError(f"payload is not UTF-8: {exc}", reason="invalid_utf8") from None
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise SchemaError(f"payload is not JSON: {exc}", reason="invalid_json") from None
    if not isinstance(data, dict):
        raise SchemaError(
            f"payload must be a JSON object, got {type(data).__name__}", reason="not_an_object"
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}"
            for e in exc.errors()[:5]
        )
        raise SchemaError(details, reason=_reason(exc)) from None
    except (ValueError, TypeError, OverflowError) as exc:  # defensive: validators must not leak
        raise SchemaError(str(exc), reason="invalid_field") from None


def decode_interaction(raw: bytes | str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Interaction:
    return decode(raw, Interaction, max_bytes=max_bytes)


def encode(event: BaseModel) -> bytes:
    """Serialize a model to compact JSON; event times as RFC 3339 UTC strings."""
    return event.model_dump_json(exclude_none=True).encode("utf-8")
