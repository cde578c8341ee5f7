"""Channels to Milvus Lite send no keepalive pings.

Lite's gRPC server keeps gRPC's default ping policy and answers pymilvus' default pings (every
10 s, idle or not) with GOAWAY "too_many_pings"; CI once lost a connect to that. The options must
reach the channel pymilvus really opens, on a real Lite server.
"""

import grpc
import pytest

from retrieval.milvus_lite import open_milvus_client

pytestmark = pytest.mark.integration


def test_lite_channels_are_opened_without_keepalive_pings(milvus_uri, monkeypatch):
    opened: list[tuple[str, dict]] = []
    real_insecure_channel = grpc.insecure_channel

    def recording(target, options=None, *args, **kwargs):
        opened.append((target, dict(options or ())))
        return real_insecure_channel(target, options, *args, **kwargs)

    monkeypatch.setattr(grpc, "insecure_channel", recording)
    client = open_milvus_client(milvus_uri, timeout_s=30)
    try:
        assert client.list_collections() == []
    finally:
        client.close()
    assert opened, "pymilvus opened no channel through grpc.insecure_channel"
    for target, options in opened:
        assert target.startswith("unix:")
        assert options["grpc.keepalive_permit_without_calls"] is False
        assert options["grpc.keepalive_time_ms"] == 2**31 - 1
