"""Which items have online rows: the ids of the item entity's hashes in Feast's Redis layout.

Serving's catalogue must not be frozen at start-up, and on an empty deployment (nothing indexed
yet) the items the stream has seen are the only catalogue there is. Feast keeps one hash per
entity, keyed by the serialized entity key plus the project (``features.redis_layout``): every
item key starts with the same bytes (the join key ``item_id``) and ends with the project, so one
``SCAN MATCH <prefix>*<project>`` walks them without touching another view or namespace; the id
is decoded from the key. SCAN visits every key of the database once per pass (O(keys), in
batches that never block Redis), which is why ``serving.live_state`` runs it in the background.
"""

from __future__ import annotations

import struct
from typing import Any

from core.errors import DependencyUnavailable
from core.settings import Deployment
from features.redis_layout import FeastRedisLayout
from features.schema import ITEM_FEATURE_TYPES, ITEM_JOIN_KEY, ITEM_VIEW

_PROBE = "\x00probe"


def _glob_escape(raw: bytes) -> bytes:
    out = bytearray()
    for byte in raw:
        if byte in b"*?[]\\":
            out += b"\\"
        out.append(byte)
    return bytes(out)


class OnlineItemScanner:
    """Lists the item ids of one deployment's online item rows (``scan()``)."""

    def __init__(self, client: Any, deployment: Deployment, batch: int = 2000) -> None:
        self._client = client
        self._batch = batch
        layout = FeastRedisLayout(
            project=deployment.feast_project,
            view=ITEM_VIEW,
            join_key=ITEM_JOIN_KEY,
            feature_types=ITEM_FEATURE_TYPES,
        )
        self._suffix = deployment.feast_project.encode()
        probe = layout.key(_PROBE)
        # key = <join-key header> <value type: 4 bytes> <value length: 4 bytes LE> <value> <project>
        value_at = len(probe) - len(self._suffix) - len(_PROBE.encode())
        self._prefix = probe[: value_at - 4]  # through the value's type tag
        self._pattern = _glob_escape(self._prefix) + b"*" + _glob_escape(self._suffix)

    def item_id(self, key: bytes) -> str | None:
        """The item id of ``key``, or None when it is not one of this deployment's item keys
        (``MATCH`` is a glob: a longer project ending in ours matches it too)."""
        if not key.startswith(self._prefix) or not key.endswith(self._suffix):
            return None
        start = len(self._prefix)
        if len(key) < start + 4:
            return None
        (length,) = struct.unpack("<I", key[start : start + 4])
        value = key[start + 4 : start + 4 + length]
        if start + 4 + length + len(self._suffix) != len(key):
            return None
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return None

    def scan(self) -> list[str]:
        """Every item id with an online row, sorted."""
        found: set[str] = set()
        try:
            for key in self._client.scan_iter(match=self._pattern, count=self._batch):
                item_id = self.item_id(key)
                if item_id is not None:
                    found.add(item_id)
        except Exception as exc:  # redis.RedisError and connection failures
            raise DependencyUnavailable("redis", f"scan item rows: {exc}") from exc
        return sorted(found)
