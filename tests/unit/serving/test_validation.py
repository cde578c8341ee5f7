import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.errors import SchemaError
from core.settings import ServingSettings
from serving.validation import build_query

LIMITS = ServingSettings(default_k=10, max_k=50, max_exclude=5)


def query(**overrides):
    args = dict(user_id="u1", k=5, context={}, exclude_item_ids=(), limits=LIMITS)
    args.update(overrides)
    return build_query(**args)


def test_valid_request_becomes_query():
    q = query(context={"device": "tv"}, exclude_item_ids=["a", "b"], include_categories=["Drama"])
    assert q.user_id == "u1" and q.k == 5
    assert q.exclude_item_ids == frozenset({"a", "b"})
    assert q.filters.include_categories == frozenset({"Drama"})


def test_k_zero_means_server_default():
    assert query(k=0).k == 10


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"user_id": ""}, "user_id must not be empty"),
        ({"user_id": "x" * 129}, "at most 128"),
        ({"k": -1}, "k must be in 1..50"),
        ({"k": 51}, "k must be in 1..50"),
        ({"exclude_item_ids": [str(i) for i in range(6)]}, "at most 5"),
        ({"exclude_item_ids": [""]}, "exclude_item_ids entry must not be empty"),
        ({"context": {str(i): "v" for i in range(33)}}, "at most 32"),
        ({"include_categories": [""]}, "filter category must not be empty"),
    ],
)
def test_invalid_requests_are_rejected_with_a_clear_message(overrides, message):
    with pytest.raises(SchemaError, match=message) as info:
        query(**overrides)
    assert info.value.reason == "invalid_argument"


@given(
    user_id=st.text(max_size=200),
    k=st.integers(min_value=-(2**31), max_value=2**31 - 1),
    context=st.dictionaries(st.text(max_size=300), st.text(max_size=300), max_size=40),
    excludes=st.lists(st.text(max_size=200), max_size=8),
)
def test_any_input_is_either_a_valid_query_or_a_schema_error(user_id, k, context, excludes):
    try:
        q = query(user_id=user_id, k=k, context=context, exclude_item_ids=excludes)
    except SchemaError:
        return
    assert 1 <= q.k <= LIMITS.max_k
    assert 1 <= len(q.user_id) <= 128
    assert len(q.exclude_item_ids) <= LIMITS.max_exclude
