"""A small Python SDK for the Recommender service. Returns plain dataclasses, not protos.

>>> client = RecommenderClient("127.0.0.1:50051")            # doctest: +SKIP
>>> answer = client.recommend("42", k=5, context={"device": "tv"})  # doctest: +SKIP
>>> [(i.item_id, i.explanation) for i in answer.items]        # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from core.errors import ConfigError, DependencyUnavailable, SchemaError
from serving.auth import bearer_metadata, channel_credentials
from serving.domain import Slate, SlateItem
from serving.proto import recommender_pb2 as pb
from serving.proto import recommender_pb2_grpc as pb_grpc


class RecommenderClient:
    def __init__(
        self,
        address: str,
        *,
        timeout_s: float = 1.0,
        token: str | None = None,
        tls_ca_file: str | None = None,
        tls_cert_file: str | None = None,
        tls_key_file: str | None = None,
        own_connection: bool = False,
    ) -> None:
        """``own_connection``: this client's channel opens its own HTTP/2 connection. gRPC shares
        one connection among channels to the same address with the same options, and a server of
        several processes (``serving.processes``) spreads *connections*: a load generator of many
        clients wants one each."""
        self.address = address
        options = [("grpc.use_local_subchannel_pool", 1)] if own_connection else None
        self.timeout_s = timeout_s
        self._metadata = bearer_metadata(token) if token else ()
        if tls_ca_file or tls_cert_file:
            credentials = channel_credentials(
                tls_ca_file, cert_file=tls_cert_file, key_file=tls_key_file
            )
            self._channel = grpc.secure_channel(address, credentials, options)
        else:
            self._channel = grpc.insecure_channel(address, options)
        self._stub = pb_grpc.RecommenderStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> RecommenderClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_until_serving(self, timeout_s: float = 30.0) -> None:
        """Block until the health service says SERVING, or raise ``DependencyUnavailable``."""
        health = health_pb2_grpc.HealthStub(self._channel)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise DependencyUnavailable("recommender", f"{self.address} not serving")
            time.sleep(0.2)

    def recommend(
        self,
        user_id: str,
        k: int = 10,
        *,
        context: Mapping[str, str] | None = None,
        exclude_item_ids: Iterable[str] = (),
        include_categories: Iterable[str] = (),
        exclude_categories: Iterable[str] = (),
        include_unavailable: bool = False,
        available_only: bool = False,
        timeout_s: float | None = None,
    ) -> Slate:
        """A slate for ``user_id``. Items the catalogue marks unavailable are left out unless
        ``include_unavailable`` (``available_only`` is the older spelling of the default)."""
        request = pb.RecommendRequest(
            user_id=user_id,
            k=k,
            context=dict(context or {}),
            exclude_item_ids=list(exclude_item_ids),
            filters=pb.Filters(
                include_categories=list(include_categories),
                exclude_categories=list(exclude_categories),
                available_only=available_only,
                include_unavailable=include_unavailable,
            ),
        )
        try:
            reply = self._stub.Recommend(
                request, timeout=timeout_s or self.timeout_s, metadata=self._metadata
            )
        except grpc.RpcError as exc:
            if exc.code() is grpc.StatusCode.UNAUTHENTICATED:
                raise ConfigError(f"{self.address} rejected this client's token") from None
            if exc.code() is grpc.StatusCode.INVALID_ARGUMENT:
                raise SchemaError(
                    exc.details() or "invalid argument", reason="invalid_argument"
                ) from None
            raise DependencyUnavailable(
                "recommender", f"{exc.code().name}: {exc.details()}"
            ) from None
        return Slate(
            request_id=reply.request_id,
            items=tuple(
                SlateItem(i.item_id, i.score, i.source, i.explanation, i.propensity, i.team)
                for i in reply.items
            ),
            model_version=reply.model_version,
            fallback=reply.fallback,
            fallback_reasons=tuple(reply.fallback_reasons),
            experiment_arm=reply.experiment_arm,
        )
