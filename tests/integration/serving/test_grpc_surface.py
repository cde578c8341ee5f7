"""The gRPC surface over a real channel, with a scripted pipeline standing in for the real one.

Every Recommend call is counted by the status it ended with
(``aether_recommend_requests_total{status}``), the calls gRPC refuses itself included."""

from __future__ import annotations

import threading
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import REGISTRY
from pydantic import SecretStr

from core.errors import DependencyUnavailable
from core.settings import ServingSettings
from serving.domain import RecommendationQuery, Slate, SlateItem
from serving.proto import recommender_pb2 as pb
from serving.proto import recommender_pb2_grpc as pb_grpc
from serving.server import SERVICE_NAME, start_server

pytestmark = pytest.mark.integration

STATUSES = ("OK", "INVALID_ARGUMENT", "INTERNAL", "UNAVAILABLE", "RESOURCE_EXHAUSTED")


def requests_by_status() -> dict[str, float]:
    return {
        status: REGISTRY.get_sample_value("aether_recommend_requests_total", {"status": status})
        or 0.0
        for status in (*STATUSES, "UNAUTHENTICATED")
    }


class StatusCounts:
    """How many Recommend calls ended with each status since it was made."""

    def __init__(self) -> None:
        self._before = requests_by_status()

    def delta(self) -> dict[str, float]:
        now = requests_by_status()
        return {
            status: now[status] - self._before[status]
            for status in now
            if now[status] != self._before[status]
        }


class ScriptedPipeline:
    def __init__(self) -> None:
        self.error: Exception | None = None
        self.gate: threading.Event | None = None
        self.arrived = threading.Condition()
        self.seen: list[tuple[RecommendationQuery, float | None]] = []

    def recommend(self, query: RecommendationQuery, *, deadline_s: float | None) -> Slate:
        with self.arrived:
            self.seen.append((query, deadline_s))
            self.arrived.notify_all()
        if self.gate is not None:
            self.gate.wait(timeout=10)
        if self.error is not None:
            raise self.error
        items = tuple(
            # An interleaved slate's shape: a team per slot, "" for one no team placed.
            SlateItem(
                f"i{n}",
                1.0 / (n + 1),
                "popular",
                "trending now",
                team="AB"[n % 3] if n % 3 < 2 else "",
            )
            for n in range(query.k)
        )
        return Slate(request_id="r1", items=items, model_version="test-v1", experiment_arm="x=ab")


@pytest.fixture
def served():
    pipeline = ScriptedPipeline()
    running = start_server(pipeline, ServingSettings(port=0, max_concurrent_rpcs=2, max_k=20))
    channel = grpc.insecure_channel(running.address)
    yield pipeline, channel
    channel.close()
    running.stop(0)


def test_recommend_round_trip(served):
    pipeline, channel = served
    stub = pb_grpc.RecommenderStub(channel)
    counts = StatusCounts()
    reply = stub.Recommend(
        pb.RecommendRequest(user_id="u1", k=3, context={"device": "tv"}), timeout=5
    )
    assert [i.item_id for i in reply.items] == ["i0", "i1", "i2"]
    assert reply.model_version == "test-v1" and not reply.fallback
    assert [i.team for i in reply.items] == ["A", "B", ""] and reply.experiment_arm == "x=ab"
    query, deadline = pipeline.seen[0]
    assert query.context == {"device": "tv"}
    assert deadline is not None and 0 < deadline <= 5.1  # gRPC rounds time_remaining()
    assert counts.delta() == {"OK": 1}


@pytest.mark.parametrize(
    "request_",
    [
        pb.RecommendRequest(user_id="", k=3),
        pb.RecommendRequest(user_id="u", k=21),
        pb.RecommendRequest(user_id="u", k=-4),
        pb.RecommendRequest(user_id="x" * 1000, k=3),
        pb.RecommendRequest(user_id="u", k=3, exclude_item_ids=["x" * 200]),
    ],
)
def test_invalid_arguments(served, request_):
    _, channel = served
    counts = StatusCounts()
    with pytest.raises(grpc.RpcError) as info:
        pb_grpc.RecommenderStub(channel).Recommend(request_, timeout=5)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details()
    assert counts.delta() == {"INVALID_ARGUMENT": 1}


def test_unexpected_errors_become_internal_without_a_stack_trace(served):
    pipeline, channel = served
    pipeline.error = ZeroDivisionError("secret detail")
    counts = StatusCounts()
    with pytest.raises(grpc.RpcError) as info:
        pb_grpc.RecommenderStub(channel).Recommend(pb.RecommendRequest(user_id="u", k=1), timeout=5)
    assert info.value.code() is grpc.StatusCode.INTERNAL
    assert "secret" not in info.value.details() and "Traceback" not in info.value.details()
    assert counts.delta() == {"INTERNAL": 1}


def test_dependency_errors_become_unavailable(served):
    pipeline, channel = served
    pipeline.error = DependencyUnavailable("redis", "connection refused")
    counts = StatusCounts()
    with pytest.raises(grpc.RpcError) as info:
        pb_grpc.RecommenderStub(channel).Recommend(pb.RecommendRequest(user_id="u", k=1), timeout=5)
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE
    assert counts.delta() == {"UNAVAILABLE": 1}


def test_overload_answers_resource_exhausted(served):
    pipeline, channel = served
    pipeline.gate = threading.Event()
    stub = pb_grpc.RecommenderStub(channel)
    counts = StatusCounts()
    with futures.ThreadPoolExecutor(4) as pool:
        blocked = [
            pool.submit(stub.Recommend, pb.RecommendRequest(user_id="u", k=1), timeout=10)
            for _ in range(2)
        ]
        with pipeline.arrived:
            assert pipeline.arrived.wait_for(lambda: len(pipeline.seen) == 2, timeout=5)
        with pytest.raises(grpc.RpcError) as info:
            stub.Recommend(pb.RecommendRequest(user_id="u", k=1), timeout=5)
        pipeline.gate.set()
        assert all(len(f.result().items) == 1 for f in blocked)
    assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    # gRPC refused the third call before any handler ran; it is counted all the same.
    assert counts.delta() == {"OK": 2, "RESOURCE_EXHAUSTED": 1}


def test_calls_refused_by_authentication_are_counted():
    limits = ServingSettings(port=0, auth_tokens=(SecretStr("s3cret"),))
    running = start_server(ScriptedPipeline(), limits)
    counts = StatusCounts()
    try:
        with grpc.insecure_channel(running.address) as channel:
            stub = pb_grpc.RecommenderStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.Recommend(pb.RecommendRequest(user_id="u", k=1), timeout=5)
            reply = stub.Recommend(
                pb.RecommendRequest(user_id="u", k=1),
                timeout=5,
                metadata=(("authorization", "Bearer s3cret"),),
            )
    finally:
        running.stop(0)
    assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED and len(reply.items) == 1
    assert counts.delta() == {"UNAUTHENTICATED": 1, "OK": 1}


def test_health_and_reflection(served):
    _, channel = served
    counts = StatusCounts()
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", SERVICE_NAME):
        status = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
    answers = reflect.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
    )
    names = {s.name for a in answers for s in a.list_services_response.service}
    assert {"aetherrec.v1.Recommender", "grpc.health.v1.Health"} <= names
    assert counts.delta() == {}  # only Recommend calls are counted


def test_a_client_without_the_proto_calls_recommend_through_reflection(served):
    """What grpcurl does (README): message types from server reflection, JSON in and out."""
    import json

    from google.protobuf import json_format, message_factory
    from google.protobuf.descriptor_pool import DescriptorPool
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    _, channel = served
    pool = DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
    method = pool.FindServiceByName(SERVICE_NAME).FindMethodByName("Recommend")
    request_type = message_factory.GetMessageClass(method.input_type)
    reply_type = message_factory.GetMessageClass(method.output_type)
    body = {"user_id": "42", "k": 3, "filters": {"exclude_categories": ["Horror"]}}
    call = channel.unary_unary(
        f"/{SERVICE_NAME}/Recommend",
        request_serializer=request_type.SerializeToString,
        response_deserializer=reply_type.FromString,
    )
    reply = call(json_format.Parse(json.dumps(body), request_type()), timeout=5)
    printed = json.loads(json_format.MessageToJson(reply))
    assert [i["itemId"] for i in printed["items"]] == ["i0", "i1", "i2"]
    assert printed["items"][0]["team"] == "A" and "team" not in printed["items"][2]  # "" omitted
    assert printed["modelVersion"] == "test-v1" and printed["experimentArm"] == "x=ab"
