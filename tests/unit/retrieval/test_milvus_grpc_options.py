"""Which Milvus channels get keepalive pings: a server's do, Milvus Lite's (file or socket) do not."""

import pytest

from retrieval.milvus_lite import grpc_options


@pytest.mark.parametrize("uri", ["/data/milvus.db", "milvus.db", "unix:/tmp/tmpx_milvus.db.sock"])
def test_lite_uris_turn_keepalive_pings_off(uri):
    assert grpc_options(uri) == {
        "grpc.keepalive_time_ms": 2**31 - 1,
        "grpc.keepalive_permit_without_calls": False,
    }


@pytest.mark.parametrize("uri", ["http://127.0.0.1:19530", "https://milvus.example:443"])
def test_server_urls_keep_pymilvus_defaults(uri):
    assert grpc_options(uri) == {}
