"""`aether index` on the shipped ml-latest-small, into a Milvus Lite file, twice (version switch)."""

import argparse
import uuid

import numpy as np
import pytest

from aether.cli import index as index_cli
from retrieval.embeddings import load_embeddings, save_embeddings
from retrieval.index import ItemIndex

pytestmark = pytest.mark.integration


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    index_cli.register(parser.add_subparsers())
    args = parser.parse_args(["index", *argv])
    return args.func(args)


def test_index_builds_the_baseline_then_switches_to_given_embeddings(tmp_path, monkeypatch, capsys):
    namespace = f"t{uuid.uuid4().hex[:8]}"
    uri = str(tmp_path / "cli.db")
    monkeypatch.setenv("MILVUS_URI", uri)
    monkeypatch.setenv("AETHER_NAMESPACE", namespace)
    exported = tmp_path / "baseline.npz"
    assert (
        _run(["--dataset", "ml-latest-small", "--dim", "16", "--save-embeddings", str(exported)])
        == 0
    )
    assert "version 1" in capsys.readouterr().out
    ids, matrix = load_embeddings(exported)
    assert matrix.shape[1] == 16 and len(ids) > 9000

    other = tmp_path / "ranker.npz"
    save_embeddings(other, ids[:500], np.ones((500, 8), dtype=np.float32))
    assert _run(["--dataset", "ml-latest-small", "--embeddings", str(other), "--keep", "1"]) == 0
    with ItemIndex(uri, alias=f"{namespace}_items", registry=f"{namespace}_aliases") as index:
        assert index.active_version == 2 and index.versions() == [2]
        assert index.count() == 500
        hits = index.search(np.ones((1, 8), dtype=np.float32), 5)[0]
        assert len(hits) == 5
