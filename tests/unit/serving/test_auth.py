"""Bearer-token checks and credential loading, without a network: the interceptor is driven directly."""

from __future__ import annotations

from types import SimpleNamespace

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.errors import ConfigError
from serving.auth import (
    DENIED_MESSAGE,
    TokenAuthInterceptor,
    bearer_metadata,
    channel_credentials,
    server_credentials,
)

RECOMMEND = "/aetherrec.v1.Recommender/Recommend"
HEALTH = "/grpc.health.v1.Health/Check"
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
TOKENS = ("s3cret-token-a", "s3cret-token-b")


def _details(method: str, metadata=()):
    return SimpleNamespace(method=method, invocation_metadata=tuple(metadata))


def _real_handler(request, context):
    return "served"


REAL = grpc.unary_unary_rpc_method_handler(_real_handler)


class _AbortingContext:
    def __init__(self) -> None:
        self.trailing: tuple = ()
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    def set_trailing_metadata(self, metadata) -> None:
        self.trailing = tuple(metadata)

    def abort(self, code, details):
        self.aborted = (code, details)
        raise RuntimeError("aborted")  # grpc's abort raises too; nothing after it runs


@pytest.fixture
def interceptor() -> TokenAuthInterceptor:
    return TokenAuthInterceptor(TOKENS)


@pytest.mark.parametrize("token", TOKENS)
def test_accepted_tokens_reach_the_real_handler(interceptor, token):
    handler = interceptor.intercept_service(
        lambda _: REAL, _details(RECOMMEND, bearer_metadata(token))
    )
    assert handler is REAL


@pytest.mark.parametrize(
    "metadata",
    [
        (),
        (("authorization", "Bearer wrong"),),
        (("authorization", "Bearer "),),
        (("authorization", "Basic czNjcmV0LXRva2VuLWE="),),
        (("authorization", TOKENS[0]),),  # no scheme
        (("x-api-key", TOKENS[0]),),
        (("authorization", f"Bearer {TOKENS[0]}x"),),
        (("authorization", f"Bearer {TOKENS[0][:-1]}"),),
    ],
)
def test_missing_or_wrong_tokens_get_a_rejecting_handler(interceptor, metadata):
    handler = interceptor.intercept_service(lambda _: REAL, _details(RECOMMEND, metadata))
    assert handler is not REAL
    context = _AbortingContext()
    with pytest.raises(RuntimeError):
        handler.unary_unary(b"any bytes", context)
    assert context.aborted == (grpc.StatusCode.UNAUTHENTICATED, DENIED_MESSAGE)
    assert ("www-authenticate", "Bearer") in context.trailing
    # The rejected request is never parsed: no deserializer on the rejecting handler.
    assert handler.request_deserializer is None


def test_scheme_is_case_insensitive(interceptor):
    assert interceptor.is_authorized((("authorization", f"bearer {TOKENS[1]}"),))
    assert interceptor.is_authorized((("authorization", f"BEARER  {TOKENS[1]} "),))


@pytest.mark.parametrize("method", [HEALTH, REFLECTION, "/grpc.reflection.v1.ServerReflection/X"])
def test_health_and_reflection_stay_open(interceptor, method):
    assert interceptor.intercept_service(lambda _: REAL, _details(method)) is REAL


def test_unknown_methods_are_rejected_not_revealed(interceptor):
    handler = interceptor.intercept_service(lambda _: None, _details("/secret.Admin/Drop"))
    assert handler is not None and handler.unary_unary is not None


def test_rejecting_handler_keeps_the_streaming_shape(interceptor):
    streaming = grpc.stream_stream_rpc_method_handler(lambda requests, context: iter(()))
    handler = interceptor.intercept_service(lambda _: streaming, _details("/a.B/C"))
    assert handler is not streaming
    assert handler.request_streaming and handler.response_streaming


@given(st.text(min_size=1, max_size=80).filter(lambda t: t.strip() not in TOKENS))
def test_no_other_token_is_accepted(presented):
    interceptor = TokenAuthInterceptor(TOKENS)
    assert not interceptor.is_authorized((("authorization", f"Bearer {presented}"),))


@given(st.text(alphabet=st.characters(blacklist_categories=("Zs", "Cc")), min_size=1, max_size=64))
def test_any_configured_token_is_accepted(token):
    interceptor = TokenAuthInterceptor([token.strip() or "x"])
    accepted = token.strip() or "x"
    assert interceptor.is_authorized(bearer_metadata(accepted))


@pytest.mark.parametrize("tokens", [(), ("",), ("  ",), ("two words",)])
def test_bad_token_lists_are_config_errors(tokens):
    with pytest.raises(ConfigError):
        TokenAuthInterceptor(tokens)


def test_unreadable_certificate_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot read TLS certificate"):
        server_credentials(tmp_path / "missing.crt", tmp_path / "missing.key")
    with pytest.raises(ConfigError, match="cannot read TLS CA"):
        channel_credentials(tmp_path / "missing-ca.crt")


def test_non_pem_files_are_config_errors(tmp_path):
    junk = tmp_path / "junk.crt"
    junk.write_text("not a certificate")
    with pytest.raises(ConfigError, match="not a PEM file"):
        server_credentials(junk, junk)


def test_client_cert_needs_its_key(tmp_path):
    with pytest.raises(ConfigError, match="both cert_file and key_file"):
        channel_credentials(cert_file=tmp_path / "client.crt")
