"""Feast's Redis layout, encoded by us, checked against Feast's own functions (no Redis)."""

from __future__ import annotations

from feast.infra.online_stores.helpers import _mmh3, _redis_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from feast.type_map import feast_value_type_to_python_type
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st

from features.redis_layout import FeastRedisLayout, decode_value, encode_value
from features.schema import USER_FEATURE_TYPES

values = st.one_of(
    st.tuples(st.just("int64"), st.integers(-(2**63), 2**63 - 1)),
    st.tuples(st.just("float64"), st.floats(allow_nan=False, width=64)),
    st.tuples(st.just("string"), st.text()),
    st.tuples(st.just("bool"), st.booleans()),
    st.tuples(st.just("string_list"), st.lists(st.text(), max_size=5)),
    st.tuples(st.sampled_from(["int64", "string", "string_list"]), st.none()),
)


@given(values)
def test_values_round_trip_and_match_feasts_decoding(kind_value: tuple[str, object]) -> None:
    kind, value = kind_value
    raw = encode_value(kind, value)
    assert decode_value(raw) == value
    proto = Value()
    proto.ParseFromString(raw)
    assert feast_value_type_to_python_type(proto) == value


def _layout(project: str = "aether") -> FeastRedisLayout:
    return FeastRedisLayout(
        project=project, view="user_features", join_key="user_id", feature_types=USER_FEATURE_TYPES
    )


@given(st.text(min_size=1, max_size=40))
def test_key_is_feasts_key(user_id: str) -> None:
    entity = EntityKey(join_keys=["user_id"], entity_values=[Value(string_val=user_id)])
    assert _layout().key(user_id) == _redis_key(
        "aether", entity, entity_key_serialization_version=3
    )


def test_namespaces_give_different_keys() -> None:
    assert _layout("a").key("u1") != _layout("b").key("u1")


def test_cas_args_carry_timestamp_and_every_feature_field() -> None:
    layout = _layout()
    args = layout.cas_args(
        {"event_time_ms": 1_700_000_000_123, "recent_items": ["m"]}, 1_700_000_000_123
    )
    assert args[:3] == [b"_ts:user_features", 1_700_000_000, 123_000_000]
    pairs = dict(zip(args[3::2], args[4::2], strict=True))
    assert pairs[_mmh3("user_features:recent_items")] == encode_value("string_list", ["m"])
    assert len(pairs) == len(USER_FEATURE_TYPES) + 1
    ts = Timestamp()
    ts.ParseFromString(pairs[b"_ts:user_features"])
    assert (ts.seconds, ts.nanos) == (1_700_000_000, 123_000_000)


def test_decode_without_timestamp_field_is_no_row() -> None:
    layout = _layout()
    assert layout.decode([None] * len(layout.read_fields)) is None
