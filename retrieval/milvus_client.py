"""pymilvus quirks in one place: importing it safely, opening a client, classifying its errors."""

from __future__ import annotations

import logging
import os
from typing import Any


def import_pymilvus() -> Any:
    """Import pymilvus with a file-path ``MILVUS_URI`` hidden from it.

    pymilvus reads ``MILVUS_URI`` itself at import time and rejects anything that is not an
    ``http(s)://`` address; our settings use the same variable for Milvus Lite file paths too.
    """
    import sys

    if "pymilvus" in sys.modules:
        return sys.modules["pymilvus"]
    value = os.environ.get("MILVUS_URI")
    hide = value is not None and "://" not in value
    if hide:
        del os.environ["MILVUS_URI"]
    try:
        import pymilvus
    finally:
        if hide and value is not None:
            os.environ["MILVUS_URI"] = value
    # pymilvus logs every failed call with a traceback at ERROR, including the UNIMPLEMENTED
    # alias calls of Milvus Lite that ``ItemIndex`` expects and handles; our errors say enough.
    logging.getLogger("pymilvus.decorators").setLevel(logging.CRITICAL)
    return pymilvus


# pymilvus pings every channel every 10 s, idle or not (``keepalive_permit_without_calls``).
# Milvus Lite's gRPC server keeps gRPC's default ping policy (at most one ping per 5 minutes
# without data, two strikes) and answers more with GOAWAY "too_many_pings", which kills the
# connection and any call on it (reproduced here with 1 s pings); CI once failed to connect with
# "Too many pings" (the CI case itself was not reproduced). A Unix socket to a child process needs no keepalive (its end is a closed socket),
# so Lite channels send no pings at all; a Milvus server allows pymilvus' pings and keeps them.
_NO_KEEPALIVE = {
    "grpc.keepalive_time_ms": 2**31 - 1,  # gRPC's "never"
    "grpc.keepalive_permit_without_calls": False,
}


def grpc_options(uri: str) -> dict[str, object]:
    """The gRPC channel options ``open_milvus_client`` adds for ``uri``."""
    local = "://" not in uri or uri.startswith("unix:")
    return dict(_NO_KEEPALIVE) if local else {}


def open_milvus_client(uri: str, *, token: str = "", timeout_s: float) -> Any:
    """A ``pymilvus.MilvusClient`` on ``uri`` (a Milvus Lite file, its ``unix:`` socket, or a
    server URL): the one way the project opens one. Raises what pymilvus raises."""
    return import_pymilvus().MilvusClient(
        uri=uri, token=token, timeout=timeout_s, grpc_options=grpc_options(uri)
    )


def is_not_found(exc: Exception) -> bool:
    text = str(exc).lower()
    return getattr(exc, "code", None) == 100 or "not found" in text or "not exist" in text


def is_unimplemented(exc: Exception) -> bool:
    code = getattr(exc, "code", None)
    code_name = getattr(code() if callable(code) else code, "name", "")
    return code_name == "UNIMPLEMENTED" or "UNIMPLEMENTED" in str(exc)
