"""``features.feast_wire`` writes Feast's bytes: checked byte for byte against Feast's own functions.

Covers every value kind (``features.schema``: int64, float64, string, bool, string_list, null) and
the key shapes the project writes (one string join key: ``user_id``, ``item_id``). This test may
import Feast; the module under test must not (``test_lazy_imports``).
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _mmh3
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Int32List, Null, StringList, Value
from feast.type_map import python_values_to_proto_values
from feast.value_type import ValueType
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import example, given
from hypothesis import strategies as st

from features.feast_wire import (
    ENTITY_KEY_SERIALIZATION_VERSION,
    decode_value,
    encode_timestamp,
    encode_value,
    entity_key,
    field_hash,
)
from features.schema import (
    ITEM_FEATURE_TYPES,
    ITEM_JOIN_KEY,
    ITEM_VIEW,
    USER_FEATURE_TYPES,
    USER_JOIN_KEY,
    USER_VIEW,
)

INT64 = st.integers(-(2**63), 2**63 - 1)
FLOAT64 = st.floats(width=64)  # NaN, infinities and -0.0 included
# Every kind the schema uses, each with None (null) too.
KINDS = sorted({*USER_FEATURE_TYPES.values(), *ITEM_FEATURE_TYPES.values()})
VALUES_OF: dict[str, st.SearchStrategy[Any]] = {
    "int64": INT64,
    "float64": FLOAT64,
    "string": st.text(),
    "bool": st.booleans(),
    "string_list": st.lists(st.text(), max_size=6),
}
kind_values = st.sampled_from(KINDS).flatmap(
    lambda kind: st.tuples(st.just(kind), st.none() | VALUES_OF[kind])
)


def feast_value(kind: str, value: Any) -> Value:
    """The ``Value`` the Redis layout wrote through Feast's protobuf class (the code replaced)."""
    if value is None:
        return Value()
    return {
        "int64": lambda: Value(int64_val=value),
        "float64": lambda: Value(double_val=value),
        "string": lambda: Value(string_val=value),
        "bool": lambda: Value(bool_val=value),
        "string_list": lambda: Value(string_list_val=StringList(val=value)),
    }[kind]()


def feast_decoded(raw: bytes) -> Any:
    """What the Redis layout decoded through Feast's protobuf class (the code replaced)."""
    proto = Value()
    proto.ParseFromString(raw)
    which = proto.WhichOneof("val")
    if which is None or which == "null_val":
        return None
    if which == "string_list_val":
        return list(proto.string_list_val.val)
    return getattr(proto, which)


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return type(a) is type(b) and a == b


def test_every_schema_kind_is_covered() -> None:
    assert set(KINDS) == set(VALUES_OF)


@given(kind_values)
@example(("int64", 0))
@example(("int64", -1))
@example(("float64", 0.0))
@example(("float64", -0.0))
@example(("string", ""))
@example(("bool", False))
@example(("string_list", []))
@example(("string_list", [""]))
def test_values_are_feasts_bytes_and_decode_as_feast_does(kind_value: tuple[str, Any]) -> None:
    kind, value = kind_value
    raw = encode_value(kind, value)
    assert raw == feast_value(kind, value).SerializeToString()
    assert same(decode_value(raw), feast_decoded(raw))
    assert same(decode_value(raw), value)


@pytest.mark.parametrize(
    ("value_type", "kind"),
    [
        (ValueType.INT64, "int64"),
        (ValueType.DOUBLE, "float64"),
        (ValueType.STRING, "string"),
        (ValueType.BOOL, "bool"),
        (ValueType.STRING_LIST, "string_list"),
    ],
)
def test_values_feast_writes_on_push_decode_as_feast_does(value_type: ValueType, kind: str) -> None:
    @given(st.none() | VALUES_OF[kind])
    def check(value: Any) -> None:
        raw = python_values_to_proto_values([value], value_type)[0].SerializeToString()
        assert same(decode_value(raw), feast_decoded(raw))

    check()


@pytest.mark.parametrize(
    "proto",
    [
        Value(null_val=Null.NULL),
        Value(int32_val=-7),
        Value(float_val=0.5),
        Value(int32_list_val=Int32List(val=[1, 2])),
        Value(unix_timestamp_val=1_700_000_000),
    ],
    ids=["null", "int32", "float", "int32_list", "unix_timestamp"],
)
def test_other_value_types_decode_as_feast_does(proto: Value) -> None:
    raw = proto.SerializeToString()
    assert same(decode_value(raw), feast_decoded(raw))


def test_decode_keeps_the_last_member_of_the_oneof_as_protobuf_does() -> None:
    raw = encode_value("int64", 3) + encode_value("string", "x")
    assert decode_value(raw) == feast_decoded(raw) == "x"


def test_out_of_range_int64_and_non_string_list_items_are_refused() -> None:
    with pytest.raises(ValueError):
        encode_value("int64", 2**63)
    with pytest.raises(TypeError):
        encode_value("string_list", ["a", 1])
    with pytest.raises(ValueError):
        encode_value("uuid", "x")


@given(st.sampled_from([USER_JOIN_KEY, ITEM_JOIN_KEY]) | st.text(min_size=1), st.text())
@example(USER_JOIN_KEY, "")
@example(ITEM_JOIN_KEY, "m\x00é😀")
def test_entity_key_is_feasts_serialized_key(join_key: str, entity_id: str) -> None:
    proto = EntityKey(join_keys=[join_key], entity_values=[Value(string_val=entity_id)])
    assert entity_key(join_key, entity_id) == serialize_entity_key(
        proto, entity_key_serialization_version=ENTITY_KEY_SERIALIZATION_VERSION
    )


@given(st.text())
def test_field_hash_is_feasts_mmh3(name: str) -> None:
    assert field_hash(name) == _mmh3(name)


def test_field_hashes_of_every_feature_are_feasts() -> None:
    for view, types in ((USER_VIEW, USER_FEATURE_TYPES), (ITEM_VIEW, ITEM_FEATURE_TYPES)):
        for name in types:
            assert field_hash(f"{view}:{name}") == _mmh3(f"{view}:{name}")


@given(st.integers(-(2**40), 2**40), st.integers(0, 999_999_999))
@example(0, 0)
@example(1_700_000_000, 0)
@example(0, 1)
def test_timestamp_is_protobufs(seconds: int, nanos: int) -> None:
    assert (
        encode_timestamp(seconds, nanos)
        == Timestamp(seconds=seconds, nanos=nanos).SerializeToString()
    )


def _outcome(encoder: Any, kind: str, value: Any) -> object:
    try:
        return encoder(kind, value)
    except Exception as exc:  # the error type is part of the contract
        return type(exc)


@given(
    st.sampled_from(KINDS),
    st.one_of(
        st.integers(-(2**64), 2**64),
        st.floats(width=64),
        st.booleans(),
        st.text(alphabet=st.characters(blacklist_categories=())),  # lone surrogates too
        st.lists(
            st.one_of(st.text(alphabet=st.characters(blacklist_categories=())), st.integers()),
            max_size=4,
        ),
        st.tuples(st.text(), st.text()),
    ),
)
@example("int64", 2**63 - 1)
@example("int64", -(2**63))
@example("int64", 2**63)
@example("string", "\ud800")
@example("string_list", ["a", "\udfff"])
def test_the_direct_encoding_equals_the_protobuf_message_on_any_input(
    kind: str, value: Any
) -> None:
    """``encode_value`` builds the bytes itself; what the protobuf message would write (or
    refuse, with which error) is the reference, for coerced and out-of-range inputs too."""
    from features.feast_wire import _encode_message

    assert _outcome(encode_value, kind, value) == _outcome(_encode_message, kind, value)


@given(st.integers(-(2**63), 2**63 - 1), st.integers(-(2**31), 2**31 - 1))
@example(2**63 - 1, 999_999_999)
@example(-1, -1)
def test_timestamp_is_protobufs_over_the_whole_range(seconds: int, nanos: int) -> None:
    assert (
        encode_timestamp(seconds, nanos)
        == Timestamp(seconds=seconds, nanos=nanos).SerializeToString()
    )
