"""Bearer tokens and TLS over real gRPC channels.

The server is built here with the same interceptor order ``start_server`` is meant to use (auth
first, then error mapping), around the real ``RecommenderServicer`` and a scripted pipeline.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from core.settings import ServingSettings
from serving.auth import (
    DENIED_MESSAGE,
    TokenAuthInterceptor,
    bearer_metadata,
    channel_credentials,
    server_credentials,
    write_self_signed_cert,
)
from serving.domain import RecommendationQuery, Slate, SlateItem
from serving.proto import recommender_pb2 as pb
from serving.proto import recommender_pb2_grpc as pb_grpc
from serving.server import SERVICE_NAME
from serving.servicer import RecommenderServicer
from serving.status_mapping import ErrorMappingInterceptor

pytestmark = pytest.mark.integration

TOKEN = "test-token-7f3a9c"
REQUEST = pb.RecommendRequest(user_id="u1", k=2)


class ScriptedPipeline:
    def __init__(self) -> None:
        self.calls = 0

    def recommend(self, query: RecommendationQuery, *, deadline_s: float | None) -> Slate:
        self.calls += 1
        items = tuple(SlateItem(f"i{n}", 1.0, "popular", "trending now") for n in range(query.k))
        return Slate(request_id="r1", items=items, model_version="test-v1")


@contextmanager
def serving(
    pipeline: ScriptedPipeline,
    *,
    tokens: tuple[str, ...] = (),
    credentials: grpc.ServerCredentials | None = None,
) -> Iterator[int]:
    interceptors: list[grpc.ServerInterceptor] = []
    if tokens:
        interceptors.append(TokenAuthInterceptor(tokens))
    interceptors.append(ErrorMappingInterceptor())
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), interceptors=interceptors)
    pb_grpc.add_RecommenderServicer_to_server(
        RecommenderServicer(pipeline, ServingSettings(port=0)), server
    )
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    address = "127.0.0.1:0"
    port = (
        server.add_secure_port(address, credentials)
        if credentials
        else server.add_insecure_port(address)
    )
    assert port > 0
    server.start()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    try:
        yield port
    finally:
        server.stop(0).wait()


@pytest.fixture
def token_server() -> Iterator[tuple[ScriptedPipeline, grpc.Channel]]:
    pipeline = ScriptedPipeline()
    with (
        serving(pipeline, tokens=(TOKEN, "second-token")) as port,
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        yield pipeline, channel


def _recommend(channel: grpc.Channel, **kwargs) -> pb.RecommendResponse:
    return pb_grpc.RecommenderStub(channel).Recommend(REQUEST, timeout=5, **kwargs)


@pytest.mark.parametrize(
    "metadata",
    [(), bearer_metadata("wrong-token"), (("authorization", TOKEN),)],
    ids=["no-token", "wrong-token", "no-scheme"],
)
def test_calls_without_a_valid_token_are_unauthenticated(token_server, metadata):
    pipeline, channel = token_server
    with pytest.raises(grpc.RpcError) as info:
        _recommend(channel, metadata=metadata)
    assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert info.value.details() == DENIED_MESSAGE
    assert TOKEN not in info.value.details()
    assert pipeline.calls == 0


def test_garbage_bytes_without_a_token_are_rejected_before_parsing(token_server):
    _, channel = token_server
    raw = channel.unary_unary("/aetherrec.v1.Recommender/Recommend")
    with pytest.raises(grpc.RpcError) as info:
        raw(b"\xff\xfe\xfd", timeout=5)
    assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED


def test_right_token_is_served(token_server):
    pipeline, channel = token_server
    reply = _recommend(channel, metadata=bearer_metadata(TOKEN))
    assert [item.item_id for item in reply.items] == ["i0", "i1"]
    assert pipeline.calls == 1


def test_health_and_reflection_need_no_token(token_server):
    _, channel = token_server
    status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert status.status == health_pb2.HealthCheckResponse.SERVING
    answers = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
    )
    names = {s.name for a in answers for s in a.list_services_response.service}
    assert SERVICE_NAME in names


def test_errors_are_still_mapped_behind_auth(token_server):
    _, channel = token_server
    with pytest.raises(grpc.RpcError) as info:
        pb_grpc.RecommenderStub(channel).Recommend(
            pb.RecommendRequest(user_id="", k=1), timeout=5, metadata=bearer_metadata(TOKEN)
        )
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> dict[str, tuple]:
    directory = tmp_path_factory.mktemp("certs")
    return {
        "server": write_self_signed_cert(directory, name="server"),
        "client": write_self_signed_cert(directory, name="client"),
        "stranger": write_self_signed_cert(directory, name="stranger"),
    }


def test_tls_server_answers_a_client_that_trusts_its_cert(certs):
    cert, key = certs["server"]
    with (
        serving(ScriptedPipeline(), credentials=server_credentials(cert, key)) as port,
        grpc.secure_channel(f"127.0.0.1:{port}", channel_credentials(cert)) as channel,
    ):
        assert len(_recommend(channel).items) == 2


def test_tls_server_refuses_plaintext_and_untrusting_clients(certs):
    cert, key = certs["server"]
    stranger_ca, _ = certs["stranger"]
    with serving(ScriptedPipeline(), credentials=server_credentials(cert, key)) as port:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as plaintext:
            with pytest.raises(grpc.RpcError) as info:
                _recommend(plaintext)
            assert info.value.code() is grpc.StatusCode.UNAVAILABLE
        untrusting = channel_credentials(stranger_ca)
        with grpc.secure_channel(f"127.0.0.1:{port}", untrusting) as channel:
            with pytest.raises(grpc.RpcError) as info:
                _recommend(channel)
            assert info.value.code() is grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_needs_a_client_cert_signed_by_the_client_ca(certs):
    cert, key = certs["server"]
    client_cert, client_key = certs["client"]
    stranger_cert, stranger_key = certs["stranger"]
    credentials = server_credentials(cert, key, client_ca_file=client_cert)
    with serving(ScriptedPipeline(), credentials=credentials) as port:
        target = f"127.0.0.1:{port}"
        trusted = channel_credentials(cert, cert_file=client_cert, key_file=client_key)
        with grpc.secure_channel(target, trusted) as channel:
            assert len(_recommend(channel).items) == 2
        for client in (
            channel_credentials(cert),
            channel_credentials(cert, cert_file=stranger_cert, key_file=stranger_key),
        ):
            with grpc.secure_channel(target, client) as channel:
                with pytest.raises(grpc.RpcError) as info:
                    _recommend(channel)
                assert info.value.code() is grpc.StatusCode.UNAVAILABLE


def test_token_and_tls_together_with_standard_call_credentials(certs):
    cert, key = certs["server"]
    pipeline = ScriptedPipeline()
    with serving(pipeline, tokens=(TOKEN,), credentials=server_credentials(cert, key)) as port:
        # gRPC's own access-token credentials send exactly ``authorization: Bearer <token>``.
        with_token = grpc.composite_channel_credentials(
            channel_credentials(cert), grpc.access_token_call_credentials(TOKEN)
        )
        with grpc.secure_channel(f"127.0.0.1:{port}", with_token) as channel:
            assert len(_recommend(channel).items) == 2
        with grpc.secure_channel(f"127.0.0.1:{port}", channel_credentials(cert)) as channel:
            with pytest.raises(grpc.RpcError) as info:
                _recommend(channel)
            assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert pipeline.calls == 1
