"""The bytes of Feast's Redis online store, written and read without importing Feast.

Why: importing Feast costs every process seconds of CPU at start-up, and the stream worker and
the serving reader need only four small formats from it. Each is a fixed, documented format, so
writing it here keeps the bytes Feast's while those processes never import Feast.
``tests/unit/features/test_feast_wire.py`` checks every function here byte for byte against
Feast's own (for every value type and key shape the project writes), and the Feast contract tests
(``tests/integration/features``) check that Feast reads what we write and the other way round.

* **entity key**, Feast's ``serialize_entity_key`` version 3, for one string-valued join key::

      <u32 number of keys = 1> <u32 STRING = 2> <u32 len> <join key>
      <u32 STRING = 2> <u32 len> <entity id>               (every u32 little-endian)

* **feature field**: ``mmh3_32("<view>:<feature>")``, unsigned, as 4 little-endian bytes
  (Feast's ``_mmh3``).
* **value**: a serialized ``feast.types.Value`` protobuf, one member of its ``val`` oneof set (an
  empty message is null). ``_VALUE_FIELDS`` declares the members we use, with Feast's field
  numbers and types, as a message of our own (``aetherrec.feast_wire.Value``): the same wire
  format, encoded and parsed by the protobuf runtime at C speed, with none of Feast's code. A
  stored value whose member is not declared here (never written by this project) is handed to
  Feast's own ``Value`` class, imported only then.
* **timestamp**: a serialized ``google.protobuf.Timestamp`` (the protobuf runtime's own class).
"""

from __future__ import annotations

import struct
from typing import Any

import mmh3
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.timestamp_pb2 import Timestamp

# The entity-key format ``entity_key`` writes; the RepoConfig (``features.store``) must name it.
ENTITY_KEY_SERIALIZATION_VERSION = 3
_STRING_TYPE = 2  # feast.types.ValueType.STRING
_U32 = struct.Struct("<I")
_ONE_STRING_KEY = _U32.pack(1)


# -- keys and field names ------------------------------------------------------------------------
def entity_key(join_key: str, entity_id: str) -> bytes:
    """Feast's ``serialize_entity_key`` (version 3) of a one-key entity with a string value."""
    key = join_key.encode("utf-8")
    value = entity_id.encode("utf-8")
    return b"".join(
        (
            _ONE_STRING_KEY,
            _U32.pack(_STRING_TYPE),
            _U32.pack(len(key)),
            key,
            _U32.pack(_STRING_TYPE),
            _U32.pack(len(value)),
            value,
        )
    )


def field_hash(name: str) -> bytes:
    """Feast's ``_mmh3``: the Redis hash field of ``"<view>:<feature>"``."""
    return _U32.pack(mmh3.hash(name, signed=False))


# -- values ----------------------------------------------------------------------------------------
_F = descriptor_pb2.FieldDescriptorProto
_PACKAGE = "aetherrec.feast_wire"
# Members of feast.types.Value's ``val`` oneof that the project writes or Feast writes for it
# (feast/protos/feast/types/Value.proto): (name, field number, type). ``null_val`` is Feast's
# enum ``Null``, a varint on the wire like the int32 declared here.
_VALUE_FIELDS = (
    ("string_val", 2, _F.TYPE_STRING),
    ("int64_val", 4, _F.TYPE_INT64),
    ("double_val", 5, _F.TYPE_DOUBLE),
    ("bool_val", 7, _F.TYPE_BOOL),
    ("string_list_val", 12, _F.TYPE_MESSAGE),  # StringList {repeated string val = 1}
    ("null_val", 19, _F.TYPE_INT32),
)


def _value_messages() -> tuple[Any, Any]:
    """Our ``Value`` and ``StringList`` classes, declared in a private descriptor pool."""
    file = descriptor_pb2.FileDescriptorProto(
        name="aetherrec/feast_wire.proto", package=_PACKAGE, syntax="proto3"
    )
    string_list = file.message_type.add(name="StringList")
    string_list.field.add(name="val", number=1, type=_F.TYPE_STRING, label=_F.LABEL_REPEATED)
    value = file.message_type.add(name="Value")
    value.oneof_decl.add(name="val")
    for name, number, kind in _VALUE_FIELDS:
        field = value.field.add(
            name=name, number=number, type=kind, label=_F.LABEL_OPTIONAL, oneof_index=0
        )
        if kind == _F.TYPE_MESSAGE:
            field.type_name = f".{_PACKAGE}.StringList"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return (
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.Value")),
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.StringList")),
    )


_Value, _StringList = _value_messages()
_NULL = b""  # the empty Value


def encode_value(kind: str, value: Any) -> bytes:
    """One feature value as a serialized ``feast.types.Value``; None is the empty (null) Value.

    The bytes of the members we write are built here directly (tag, varint or fixed64, length
    prefix): the protobuf runtime's message per value cost the stream worker more than the rest
    of a row's encoding. Anything outside their plain range (an int64 out of range, a string that
    is not valid UTF-8, a list item that is not a ``str``) goes through the protobuf message, so
    errors are protobuf's own; ``tests/unit/features/test_feast_wire.py`` checks the bytes against
    Feast's ``Value`` for every kind.
    """
    if value is None:
        return _NULL
    if kind == "int64":
        number = int(value)
        if -_INT64_LIMIT <= number < _INT64_LIMIT:
            return b"\x20" + _varint(number & _U64_MASK)  # field 4, varint (two's complement)
    elif kind == "float64":
        return b"\x29" + _DOUBLE.pack(float(value))  # field 5, fixed64
    elif kind == "string":
        text = _utf8(str(value))
        if text is not None:
            return b"\x12" + _varint(len(text)) + text  # field 2, length-delimited
    elif kind == "bool":
        return b"\x38\x01" if bool(value) else b"\x38\x00"  # field 7, varint
    elif kind == "string_list":
        items = [_utf8(v) if type(v) is str else None for v in value]
        if None not in items:
            inner = b"".join(b"\x0a" + _varint(len(v)) + v for v in items if v is not None)
            return b"\x62" + _varint(len(inner)) + inner  # field 12: StringList {1: strings}
    return _encode_message(kind, value)


def _encode_message(kind: str, value: Any) -> bytes:
    """``encode_value`` through the protobuf message (its checks and errors)."""
    if kind == "int64":
        proto = _Value(int64_val=int(value))
    elif kind == "float64":
        proto = _Value(double_val=float(value))
    elif kind == "string":
        proto = _Value(string_val=str(value))
    elif kind == "bool":
        proto = _Value(bool_val=bool(value))
    elif kind == "string_list":
        proto = _Value(string_list_val=_StringList(val=value))
    else:
        raise ValueError(f"unknown feature kind {kind!r}")
    return proto.SerializeToString()


_INT64_LIMIT = 2**63
_U64_MASK = 2**64 - 1
_DOUBLE = struct.Struct("<d")


def _varint(number: int) -> bytes:
    """Protobuf's base-128 varint of a non-negative int."""
    if number < 0x80:
        return bytes((number,))
    out = bytearray()
    while number > 0x7F:
        out.append((number & 0x7F) | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)


def _utf8(text: str) -> bytes | None:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: protobuf refuses them, with its own error
        return None


def decode_value(raw: bytes | None) -> Any:
    """A serialized ``feast.types.Value`` → its Python value; None for null or empty."""
    if not raw:
        return None
    proto = _Value.FromString(raw)
    which = proto.WhichOneof("val")
    if which is None:  # a member not declared here
        return _decode_with_feast(raw)
    if which == "null_val":
        return None
    if which == "string_list_val":
        return list(proto.string_list_val.val)
    return getattr(proto, which)


def _decode_with_feast(raw: bytes) -> Any:
    """A Value type this project never writes (Feast wrote it): Feast's own class reads it."""
    from feast.protos.feast.types.Value_pb2 import Value as FeastValue

    proto = FeastValue.FromString(raw)
    which = proto.WhichOneof("val")
    if which is None or which == "null_val":
        return None
    return getattr(proto, which)


# -- timestamps ------------------------------------------------------------------------------------
def encode_timestamp(seconds: int, nanos: int) -> bytes:
    """A serialized ``google.protobuf.Timestamp``."""
    if 0 <= seconds < _INT64_LIMIT and 0 <= nanos < 2**31:  # proto3: zero fields are left out
        return (b"\x08" + _varint(seconds) if seconds else b"") + (
            b"\x10" + _varint(nanos) if nanos else b""
        )
    return Timestamp(seconds=seconds, nanos=nanos).SerializeToString()
