"""Builds and runs the gRPC server: Recommender, standard health checking and reflection.

Overload protection: ``maximum_concurrent_rpcs`` makes gRPC answer RESOURCE_EXHAUSTED once that
many calls are in flight (per process); message sizes are capped; ``stop(grace)`` drains
in-flight calls. Several processes on one port: ``serving.processes``. Every Recommend call is
counted by the status it ends with (``serving.server_metrics.RequestStatusInterceptor``, first in
line, so refused calls count too).
"""

from __future__ import annotations

import logging
import signal
import threading
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from core.settings import ServingSettings
from serving.auth import TokenAuthInterceptor, server_credentials
from serving.proto import recommender_pb2 as pb
from serving.proto import recommender_pb2_grpc as pb_grpc
from serving.server_metrics import RequestStatusInterceptor
from serving.servicer import RecommenderServicer, RecommendPipeline
from serving.status_mapping import ErrorMappingInterceptor

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Recommender"].full_name
RECOMMEND_METHOD = f"/{SERVICE_NAME}/Recommend"
MAX_MESSAGE_BYTES = 1 * 1024 * 1024


def server_options(*, reuse_port: bool = False) -> list[tuple[str, int]]:
    """The gRPC channel options of ``aether serve``'s server: message-size caps, SO_REUSEPORT."""
    return [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.so_reuseport", 1 if reuse_port else 0),
    ]


@dataclass
class RunningServer:
    server: grpc.Server
    port: int
    health: health.HealthServicer

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self, grace_s: float = 5.0) -> None:
        self.health.enter_graceful_shutdown()
        self.server.stop(grace_s).wait()


def start_server(
    pipeline: RecommendPipeline, limits: ServingSettings, *, reuse_port: bool = False
) -> RunningServer:
    """Start serving on ``limits.host:limits.port`` (port 0 picks a free one) and return at once.

    ``reuse_port``: bind with SO_REUSEPORT, so that several server processes share the port
    (``serving.processes``); off by default, so a second server on a taken port fails loudly."""
    status_counter = RequestStatusInterceptor(RECOMMEND_METHOD)
    interceptors: list[grpc.ServerInterceptor] = [status_counter]
    if limits.auth_tokens:
        # Next, so a rejected call runs nothing else (but is counted) and its bytes are never
        # parsed.
        interceptors.append(
            TokenAuthInterceptor([t.get_secret_value() for t in limits.auth_tokens])
        )
    interceptors.append(ErrorMappingInterceptor())
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=limits.max_workers, thread_name_prefix="grpc"),
        interceptors=interceptors,
        maximum_concurrent_rpcs=limits.max_concurrent_rpcs,
        options=server_options(reuse_port=reuse_port),
    )
    status_counter.watch(server)
    pb_grpc.add_RecommenderServicer_to_server(RecommenderServicer(pipeline, limits), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    address = f"{limits.host}:{limits.port}"
    if limits.tls_cert_file:
        credentials = server_credentials(
            limits.tls_cert_file, limits.tls_key_file, limits.tls_client_ca_file or None
        )
        port = server.add_secure_port(address, credentials)
    else:
        if limits.auth_tokens:
            log.warning("bearer tokens on a plaintext port: anyone on the network can read them")
        port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot bind gRPC server to {limits.host}:{limits.port}")
    server.start()
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("gRPC Recommender serving on %s:%d", limits.host, port)
    return RunningServer(server=server, port=port, health=health_servicer)


def serve_forever(running: RunningServer, grace_s: float = 5.0) -> None:
    """Block until SIGINT/SIGTERM, then drain and stop."""
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    stopped.wait()
    log.info("shutting down (grace %.1fs)", grace_s)
    running.stop(grace_s)
