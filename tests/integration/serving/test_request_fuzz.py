"""Property-based fuzz of the Recommend request over a real channel to ``start_server``.

Property: whatever a caller sends, the answer is OK, INVALID_ARGUMENT, or RESOURCE_EXHAUSTED (only
for messages over the server's size cap) — never INTERNAL/UNKNOWN; details never leak a stack
trace or a source path; and the server still answers a valid request afterwards.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import grpc
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from core.settings import ServingSettings
from serving.domain import RecommendationQuery, Slate, SlateItem
from serving.proto import recommender_pb2 as pb
from serving.proto import recommender_pb2_grpc as pb_grpc
from serving.server import MAX_MESSAGE_BYTES, start_server

pytestmark = pytest.mark.integration

METHOD = "/aetherrec.v1.Recommender/Recommend"
LEAK = re.compile(r"Traceback|File \"|\.py\b|/site-packages/|/serving/")
ALLOWED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT}
FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class ScriptedPipeline:
    def recommend(self, query: RecommendationQuery, *, deadline_s: float | None) -> Slate:
        items = tuple(SlateItem(f"i{n}", 1.0, "popular", "trending now") for n in range(query.k))
        return Slate(request_id="r1", items=items, model_version="test-v1")


@pytest.fixture(scope="module")
def channel() -> Iterator[grpc.Channel]:
    running = start_server(ScriptedPipeline(), ServingSettings(port=0))
    with grpc.insecure_channel(running.address) as channel:
        yield channel
    running.stop(0)


# Valid UTF-8 only: the Python protobuf runtime refuses lone surrogates on the client side.
# Raw invalid UTF-8 on the wire is covered by the garbage-bytes fuzz below.
chars = st.characters(blacklist_categories=("Cs",))
short_text = st.text(chars, max_size=40)
# Huge strings cheaply: one character repeated, up to just past the message cap.
huge_text = st.builds(lambda c, n: c * n, chars, st.integers(0, MAX_MESSAGE_BYTES + 4096))
odd_text = st.one_of(
    st.just(""),
    short_text,
    st.sampled_from(["\x00", "\u200b", "\ufeff", "e\u0301", "\U0001f600" * 40, "🏳️‍🌈", "ا" * 129]),
    huge_text,
)
many_ids = st.one_of(
    st.lists(short_text, max_size=50),
    st.builds(lambda n: [f"item-{i}" for i in range(n)], st.integers(0, 3000)),
)
contexts = st.one_of(
    st.dictionaries(short_text, short_text, max_size=50),
    st.builds(lambda n, v: {f"k{i}": v for i in range(n)}, st.integers(0, 2000), short_text),
    st.builds(lambda k, v: {k: v}, odd_text, odd_text),
)
# Mostly-valid requests, so the fuzz also walks the servicer → pipeline → response path.
id_text = st.text(chars, min_size=1, max_size=128)
plausible_requests = st.builds(
    pb.RecommendRequest,
    user_id=id_text,
    k=st.integers(0, ServingSettings().max_k),
    context=st.dictionaries(st.text(chars, min_size=1, max_size=20), short_text, max_size=32),
    exclude_item_ids=st.one_of(
        st.lists(id_text, max_size=20),
        st.builds(lambda n: [f"item-{i}" for i in range(n)], st.integers(0, 1000)),
    ),
    filters=st.builds(
        pb.Filters,
        include_categories=st.lists(id_text, max_size=5),
        exclude_categories=st.lists(id_text, max_size=5),
        available_only=st.booleans(),
    ),
)
hostile_requests = st.builds(
    pb.RecommendRequest,
    user_id=odd_text,
    k=st.integers(-(2**31), 2**31 - 1),
    context=contexts,
    exclude_item_ids=many_ids,
    filters=st.builds(
        pb.Filters,
        include_categories=many_ids,
        exclude_categories=st.lists(odd_text, max_size=5),
        available_only=st.booleans(),
    ),
)


def _outcome(call, payload) -> tuple[grpc.StatusCode, str]:
    try:
        call(payload, timeout=10)
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def _assert_well_answered(code: grpc.StatusCode, details: str, size: int) -> None:
    allowed = ALLOWED | (
        {grpc.StatusCode.RESOURCE_EXHAUSTED} if size > MAX_MESSAGE_BYTES else set()
    )
    event(code.name)  # shown by --hypothesis-show-statistics: which answers the fuzz reached
    assert code in allowed, f"{code.name}: {details!r} for a {size}-byte request"
    assert not LEAK.search(details), details


def _assert_still_serving(channel: grpc.Channel) -> None:
    reply = pb_grpc.RecommenderStub(channel).Recommend(
        pb.RecommendRequest(user_id="u1", k=3), timeout=5
    )
    assert [item.item_id for item in reply.items] == ["i0", "i1", "i2"]


@FUZZ
@given(request=st.one_of(plausible_requests, hostile_requests))
def test_any_request_message_gets_a_clean_answer(channel, request):
    code, details = _outcome(pb_grpc.RecommenderStub(channel).Recommend, request)
    _assert_well_answered(code, details, request.ByteSize())
    _assert_still_serving(channel)


def _mutated(seed_bytes: bytes, flips: list[tuple[int, int]]) -> bytes:
    data = bytearray(seed_bytes)
    for position, value in flips:
        if data:
            data[position % len(data)] = value
    return bytes(data)


VALID_WIRE = pb.RecommendRequest(
    user_id="u1", k=3, context={"device": "tv"}, exclude_item_ids=["a", "b"]
).SerializeToString()
garbage = st.one_of(
    st.binary(max_size=4096),
    st.builds(
        _mutated,
        st.just(VALID_WIRE),
        st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=8),
    ),
    st.builds(lambda prefix, tail: prefix + tail, st.just(VALID_WIRE), st.binary(max_size=64)),
)


@FUZZ
@given(payload=garbage)
def test_garbage_bytes_get_a_clean_answer(channel, payload):
    raw = channel.unary_unary(METHOD, request_serializer=None, response_deserializer=None)
    code, details = _outcome(raw, payload)
    _assert_well_answered(code, details, len(payload))
    _assert_still_serving(channel)


def test_oversize_messages_are_resource_exhausted(channel):
    request = pb.RecommendRequest(user_id="u" * (MAX_MESSAGE_BYTES + 1), k=1)
    code, details = _outcome(pb_grpc.RecommenderStub(channel).Recommend, request)
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert not LEAK.search(details)
    _assert_still_serving(channel)
