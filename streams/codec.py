"""Byte codecs of the worker's own records: item updates (repartition topic), keyed states,
dead letters. Public event payloads are decoded by :mod:`events.codec`; this module is internal.

Everything is compact JSON (orjson) so that states stay inspectable with ``redis-cli``.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from streams.item_features import ItemState, ItemUpdate
from streams.user_features import UserState

FORWARD_MAX_BYTES = 64 * 1024  # target size of one grouped repartition message (see below)


def encode_update(update: ItemUpdate) -> bytes:
    """One update as a JSON object (the legacy single-update repartition record)."""
    return orjson.dumps(_update_body(update))


def encode_updates(
    updates: Sequence[ItemUpdate], max_bytes: int = FORWARD_MAX_BYTES
) -> list[bytes]:
    """Updates as JSON arrays: as few messages as keep each near ``max_bytes``."""
    return json_arrays((orjson.dumps(_update_body(u)) for u in updates), max_bytes)


def json_arrays(bodies: Iterable[bytes], max_bytes: int = FORWARD_MAX_BYTES) -> list[bytes]:
    """Encoded JSON values joined into JSON arrays, as few as keep each near ``max_bytes``.

    An array holds at least one value, so a single value larger than ``max_bytes`` (a big
    catalogue record) still travels, alone.
    """
    messages: list[bytes] = []
    parts: list[bytes] = []
    size = 2
    for body in bodies:
        if parts and size + len(body) + 1 > max_bytes:
            messages.append(b"[" + b",".join(parts) + b"]")
            parts, size = [], 2
        parts.append(body)
        size += len(body) + 1
    if parts:
        messages.append(b"[" + b",".join(parts) + b"]")
    return messages


def _update_body(update: ItemUpdate) -> dict[str, Any]:
    body: dict[str, Any] = {
        "k": update.kind,
        "i": update.item_id,
        "e": update.event_id,
        "t": update.event_time_ms,
    }
    if update.source:
        body["src"] = update.source
        body["so"] = update.source_offset
    if update.kind == "interaction":
        body["y"] = update.event_type
    elif update.kind == "catalog":
        body.update(
            title=update.title,
            cat=list(update.categories),
            created=update.created_time_ms,
            avail=update.available,
        )
    return body


def decode_update(raw: bytes) -> ItemUpdate:
    """One legacy single-update record (a JSON object)."""
    return _update_from_body(orjson.loads(raw))


def decode_updates(raw: bytes) -> list[ItemUpdate]:
    """A repartition record: a JSON array of updates (``encode_updates``) or, as written before
    updates were grouped, a single JSON object."""
    body = orjson.loads(raw)
    if not isinstance(body, list):
        return [_update_from_body(body)]
    if not body:
        raise ValueError("an empty update group")  # never written: a corrupt record
    return [_update_from_body(b) for b in body]


def _update_from_body(body: dict[str, Any]) -> ItemUpdate:
    return ItemUpdate(
        kind=body["k"],
        item_id=body["i"],
        event_id=body["e"],
        event_time_ms=body["t"],
        event_type=body.get("y", ""),
        title=body.get("title", ""),
        categories=tuple(body.get("cat", ())),
        created_time_ms=body.get("created"),
        available=body.get("avail", True),
        source=body.get("src", ""),
        source_offset=body.get("so", -1),
    )


def encode_user_state(state: UserState) -> bytes:
    return orjson.dumps(
        {
            "l": state.latest_ms,
            "s": state.seen,
            "h": state.history,
            "d": {item: list(key) for item, key in state.dismissed.items()},
            "a": {t: {str(m): n for m, n in b.items()} for t, b in state.activity.items()},
        }
    )


def decode_user_state(raw: bytes) -> UserState:
    body = orjson.loads(raw)
    return UserState(
        latest_ms=body["l"],
        seen=body["s"],
        history=[(t, e, i) for t, e, i in body["h"]],
        dismissed={item: (t, e) for item, (t, e) in body["d"].items()},
        activity={t: {int(m): n for m, n in b.items()} for t, b in body["a"].items()},
    )


def encode_item_state(state: ItemState) -> bytes:
    return orjson.dumps(
        {
            "l": state.latest_ms,
            "i": state.interaction_ms,
            "s": state.seen,
            "m": {str(b): m for b, m in state.mass.items()},
            "c": state.clicks,
            "n": state.impressions,
            "ct": state.created_time_ms,
            "ck": list(state.catalog_key) if state.catalog_key else None,
            "ti": state.title,
            "ca": list(state.categories),
            "av": state.available,
            "sm": state.source_marks,
        }
    )


def decode_item_state(raw: bytes) -> ItemState:
    body = orjson.loads(raw)
    key = body["ck"]
    return ItemState(
        latest_ms=body["l"],
        # A state saved before "i" existed referenced its mass at "l" (issue 17); an impression
        # that had moved "l" far ahead had pruned the mass, so an empty mass means no reference.
        interaction_ms=body.get("i", body["l"] if body["m"] else None),
        seen=body["s"],
        mass={int(b): m for b, m in body["m"].items()},
        clicks=body["c"],
        impressions=body["n"],
        created_time_ms=body["ct"],
        catalog_key=(key[0], key[1]) if key else None,
        title=body["ti"],
        categories=tuple(body["ca"]),
        available=body["av"],
        source_marks=body.get("sm", {}),
    )


def encode_dead_letter(
    *, payload: bytes, reason: str, error: str, topic: str, partition: int, offset: int, limit: int
) -> bytes:
    """The dead-letter record: the raw payload (base64, truncated to ``limit``), why, and where from."""
    kept = payload[:limit]
    return orjson.dumps(
        {
            "reason": reason,
            "error": error[:2000],
            "source_topic": topic,
            "source_partition": partition,
            "source_offset": offset,
            "payload_b64": base64.b64encode(kept).decode("ascii"),
            "payload_bytes": len(payload),
            "truncated": len(kept) < len(payload),
        }
    )
