"""The one place that maps project errors to gRPC status codes.

``ErrorMappingInterceptor`` wraps every unary handler: a ``SchemaError`` becomes INVALID_ARGUMENT,
``NotFoundError`` NOT_FOUND, ``DependencyUnavailable`` UNAVAILABLE, anything else INTERNAL with a
generic message (the stack trace goes to the log, never to the caller).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import grpc

from core.errors import DependencyUnavailable, NotFoundError, SchemaError

log = logging.getLogger(__name__)


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    if isinstance(exc, SchemaError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, NotFoundError):
        return grpc.StatusCode.NOT_FOUND, str(exc)
    if isinstance(exc, DependencyUnavailable):
        return grpc.StatusCode.UNAVAILABLE, str(exc)
    return grpc.StatusCode.INTERNAL, "internal error; see server log"


class ErrorMappingInterceptor(grpc.ServerInterceptor):
    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary
        parse = handler.request_deserializer
        method = handler_call_details.method

        def guarded(raw: Any, context: grpc.ServicerContext) -> Any:
            # Parse here rather than in gRPC, whose own parse failure answers INTERNAL.
            try:
                request = parse(raw) if parse is not None else raw
            except Exception:
                context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "request is not a valid message for this method",
                )
            try:
                return inner(request, context)
            except Exception as exc:
                if isinstance(exc, grpc.RpcError) or _aborted(context):
                    raise
                code, message = status_for(exc)
                if code is grpc.StatusCode.INTERNAL:
                    log.exception("unhandled error in %s", method)
                context.abort(code, message)

        return grpc.unary_unary_rpc_method_handler(
            guarded,
            request_deserializer=None,  # guarded parses, so bad bytes become INVALID_ARGUMENT
            response_serializer=handler.response_serializer,
        )


def _aborted(context: grpc.ServicerContext) -> bool:
    code = getattr(context, "code", lambda: None)()
    return code is not None and code is not grpc.StatusCode.OK
