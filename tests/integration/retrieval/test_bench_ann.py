"""``aether bench retrieval``'s ANN part, end to end on each Milvus backend (small sizes)."""

import json
from pathlib import Path

import pytest

from aether.cli import main as aether
from retrieval.milvus_lite import is_milvus_lite_uri

pytestmark = pytest.mark.integration


def test_ann_figures_on_each_backend(milvus_backend_uri: str, tmp_path: Path) -> None:
    out = tmp_path / "ann.json"
    argv = ["--skip-recall", "--sizes", "2000", "--ks", "10,100", "--queries", "20"]
    argv += ["--workdir", str(tmp_path / "work"), "--json", str(out)]  # index type: auto
    lite = is_milvus_lite_uri(milvus_backend_uri)
    if not lite:
        argv += ["--milvus-uri", milvus_backend_uri]
    assert aether(["bench", "retrieval", *argv]) == 0

    figures = json.loads(out.read_text())
    assert figures["ann_backend"] == (
        "Milvus Lite" if lite else f"Milvus server {milvus_backend_uri}"
    )
    assert figures["ann_index_type_2000"] == "FLAT"  # what `aether index` builds at this size
    for k in (10, 100):
        assert figures[f"ann_recall_2000_k{k}"] == pytest.approx(1.0)  # FLAT is exact
        assert 0 < figures[f"ann_p50_ms_2000_k{k}"] <= figures[f"ann_p99_ms_2000_k{k}"]
    if lite:
        assert not (tmp_path / "work" / "ann_2000.db").exists()
    else:  # the run's collections are dropped from the shared server
        from pymilvus import MilvusClient

        client = MilvusClient(uri=milvus_backend_uri)
        try:
            assert not [c for c in client.list_collections() if c.startswith("bench")]
        finally:
            client.close()
