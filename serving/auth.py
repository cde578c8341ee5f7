"""Who may call the server: bearer-token authentication and TLS credentials.

``TokenAuthInterceptor`` requires ``authorization: Bearer <token>`` call metadata on every method
except the open ones (standard health checking and reflection), so orchestrators can still probe
a locked-down server. It is deny-by-default: a service added later is protected without anyone
remembering to list it. A missing or wrong token is answered ``UNAUTHENTICATED`` with a fixed
message that says nothing about which tokens exist.

``server_credentials`` / ``channel_credentials`` load PEM files into gRPC credentials (mutual TLS
when a client CA is given) and turn unreadable or non-PEM files into ``ConfigError``.
``write_self_signed_cert`` makes a throwaway certificate with the ``openssl`` command line, for
tests and local development only.

Tokens travel in clear text unless the port is TLS; turn on TLS wherever the network is not trusted.
"""

from __future__ import annotations

import hmac
import logging
import shutil
import subprocess
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import Any

import grpc

from core.errors import ConfigError

log = logging.getLogger(__name__)

AUTHORIZATION_KEY = "authorization"
BEARER_SCHEME = "bearer"
# Probes must work without credentials; both reflection versions are listed because clients differ.
OPEN_SERVICES: tuple[str, ...] = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)
DENIED_MESSAGE = "missing or invalid bearer token"
_PEM_MARKER = b"-----BEGIN "


def bearer_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """Call metadata a client sends to authenticate: ``metadata=bearer_metadata(token)``."""
    return ((AUTHORIZATION_KEY, f"Bearer {token}"),)


def _service_of(method: str) -> str:
    # "/package.Service/Method" -> "package.Service"
    return method.lstrip("/").split("/", 1)[0]


def _presented_token(metadata: Iterable[tuple[str, Any]] | None) -> bytes | None:
    for key, value in metadata or ():
        if key != AUTHORIZATION_KEY or not isinstance(value, str):
            continue
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() == BEARER_SCHEME and token.strip():
            return token.strip().encode("utf-8", "surrogatepass")
        return None
    return None


class TokenAuthInterceptor(grpc.ServerInterceptor):
    """Rejects calls without an accepted bearer token, except to ``open_services``.

    Put it first in the server's interceptor list so nothing else runs for a rejected call.
    """

    def __init__(
        self, tokens: Collection[str], *, open_services: Collection[str] = OPEN_SERVICES
    ) -> None:
        accepted = [token.strip() for token in tokens]
        if not accepted or any(not token or " " in token for token in accepted):
            raise ConfigError("auth tokens must be a non-empty list of tokens without spaces")
        self._tokens = tuple(token.encode("utf-8", "surrogatepass") for token in accepted)
        self.open_services = frozenset(open_services)

    def is_authorized(self, metadata: Iterable[tuple[str, Any]] | None) -> bool:
        presented = _presented_token(metadata)
        if presented is None:
            return False
        # Compare against every token (no early exit) so timing does not reveal which one matched.
        matches = [hmac.compare_digest(presented, token) for token in self._tokens]
        return any(matches)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        if _service_of(method) in self.open_services:
            return continuation(handler_call_details)
        if self.is_authorized(handler_call_details.invocation_metadata):
            return continuation(handler_call_details)
        log.info("rejected unauthenticated call to %s", method)
        return _denying_handler(continuation(handler_call_details))


def _deny(request: Any, context: grpc.ServicerContext) -> Any:
    context.set_trailing_metadata((("www-authenticate", "Bearer"),))
    context.abort(grpc.StatusCode.UNAUTHENTICATED, DENIED_MESSAGE)


def _denying_handler(handler: grpc.RpcMethodHandler | None) -> grpc.RpcMethodHandler:
    """A handler of the same streaming shape as ``handler`` that only rejects.

    No deserializer: the request bytes of a rejected call are never parsed. An unknown method is
    rejected too, so an unauthenticated caller cannot probe which methods exist.
    """
    request_streaming = handler is not None and handler.request_streaming
    response_streaming = handler is not None and handler.response_streaming
    if request_streaming and response_streaming:
        return grpc.stream_stream_rpc_method_handler(_deny)
    if request_streaming:
        return grpc.stream_unary_rpc_method_handler(_deny)
    if response_streaming:
        return grpc.unary_stream_rpc_method_handler(_deny)
    return grpc.unary_unary_rpc_method_handler(_deny)


def _read_pem(path: str | Path, what: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read TLS {what} {str(path)!r}: {exc.strerror}") from exc
    if _PEM_MARKER not in data:
        raise ConfigError(f"TLS {what} {str(path)!r} is not a PEM file")
    return data


def server_credentials(
    cert_file: str | Path, key_file: str | Path, client_ca_file: str | Path | None = None
) -> grpc.ServerCredentials:
    """TLS for ``server.add_secure_port``; with ``client_ca_file`` clients must present a cert it signed."""
    certificate = _read_pem(cert_file, "certificate")
    pair = (_read_pem(key_file, "private key"), certificate)
    if client_ca_file:
        return grpc.ssl_server_credentials(
            [pair],
            root_certificates=_read_pem(client_ca_file, "client CA"),
            require_client_auth=True,
        )
    return grpc.ssl_server_credentials([pair])


def channel_credentials(
    ca_file: str | Path | None = None,
    *,
    cert_file: str | Path | None = None,
    key_file: str | Path | None = None,
) -> grpc.ChannelCredentials:
    """TLS for ``grpc.secure_channel``: trust ``ca_file`` (system roots if None); cert+key for mTLS."""
    if bool(cert_file) != bool(key_file):
        raise ConfigError("a client certificate needs both cert_file and key_file")
    return grpc.ssl_channel_credentials(
        root_certificates=_read_pem(ca_file, "CA") if ca_file else None,
        private_key=_read_pem(key_file, "private key") if key_file else None,
        certificate_chain=_read_pem(cert_file, "certificate") if cert_file else None,
    )


def write_self_signed_cert(
    directory: str | Path, *, name: str = "server", hosts: Collection[str] = ("localhost",)
) -> tuple[Path, Path]:
    """Write ``<name>.crt`` / ``<name>.key`` (self-signed, 1 day) valid for ``hosts`` and 127.0.0.1.

    For tests and local development only; needs the ``openssl`` command line. The certificate is
    also its own CA, so pass the .crt as ``ca_file`` / ``client_ca_file``.
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        raise ConfigError("the openssl command line is needed to make a self-signed certificate")
    directory = Path(directory)
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    alt_names = ",".join([*(f"DNS:{host}" for host in hosts), "IP:127.0.0.1"])
    command = [
        openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-days", "1", "-subj", f"/CN={name}",
        "-addext", f"subjectAltName={alt_names}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-keyout", str(key), "-out", str(cert),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ConfigError(f"openssl could not make a certificate: {result.stderr.strip()}")
    return cert, key
