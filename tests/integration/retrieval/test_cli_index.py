"""`aether index` on the shipped ml-latest-small, twice (version switch), into Milvus Lite and a server."""

import argparse
import uuid

import numpy as np
import pytest

from aether.cli import index as index_cli
from interactions.movielens import load_movielens
from retrieval.embeddings import load_embeddings, save_embeddings
from retrieval.index import ItemIndex

pytestmark = pytest.mark.integration

RATINGS = 3000


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    index_cli.register(parser.add_subparsers())
    args = parser.parse_args(["index", *argv])
    return args.func(args)


def test_index_builds_the_baseline_then_switches_to_given_embeddings(
    tmp_path, monkeypatch, capsys, milvus_backend_uri, alias_prefix
):
    namespace = alias_prefix  # its collections are dropped from a shared server at teardown
    uri = milvus_backend_uri
    monkeypatch.setenv("MILVUS_URI", uri)
    monkeypatch.setenv("AETHER_NAMESPACE", namespace)
    monkeypatch.setenv("AETHER_DATA_DIR", str(tmp_path / ".aether"))  # its registry
    exported = tmp_path / "baseline.npz"
    # the first ratings only (the PPMI-SVD of all of ml-latest-small costs ~10 s of CPU)
    argv = ["--dataset", "ml-latest-small", "--limit", str(RATINGS), "--dim", "16"]
    assert _run([*argv, "--no-content-map", "--save-embeddings", str(exported)]) == 0
    assert "index items_v1" in capsys.readouterr().out
    ids, matrix = load_embeddings(exported)
    replayed = load_movielens("ml-latest-small").ratings.iloc[:RATINGS]
    assert matrix.shape[1] == 16 and sorted(ids) == sorted(set(replayed["item_id"]))

    other = tmp_path / "ranker.npz"
    save_embeddings(other, ids[:300], np.ones((300, 8), dtype=np.float32))
    assert _run(["--dataset", "ml-latest-small", "--embeddings", str(other), "--keep", "1"]) == 0
    assert "dropped: items_v1" in capsys.readouterr().out
    with ItemIndex(uri, alias=f"{namespace}_items", registry=f"{namespace}_aliases") as index:
        assert index.active_version == 2 and index.versions() == [2]
        assert index.count() == 300
        hits = index.search(np.ones((1, 8), dtype=np.float32), 5)[0]
        assert len(hits) == 5


def test_index_from_a_ranker_checkpoint_records_its_model_version(tmp_path, monkeypatch, capsys):
    import torch

    from ranker.checkpoint import save_checkpoint
    from ranker.data import ItemVocabulary
    from ranker.model import SASRec, SASRecConfig
    from ranker.scoring import SASRecRanker
    from retrieval.embeddings import embeddings_model_version

    torch.manual_seed(0)
    # ids of the shipped sample, so the catalogue knows them
    item_ids = tuple(str(i) for i in (1, 2, 3, 5, 6, 7, 10, 11))
    checkpoint = tmp_path / "ranker.pt"
    model = SASRec(SASRecConfig(n_items=len(item_ids), max_length=8, hidden=16, n_blocks=1))
    save_checkpoint(checkpoint, model.eval(), ItemVocabulary(item_ids), {"dataset": "test"})
    ranker = SASRecRanker.from_checkpoint(checkpoint)

    namespace = f"t{uuid.uuid4().hex[:8]}"
    uri = str(tmp_path / "ranker-index.db")
    monkeypatch.setenv("MILVUS_URI", uri)
    monkeypatch.setenv("AETHER_NAMESPACE", namespace)
    monkeypatch.setenv("AETHER_DATA_DIR", str(tmp_path / ".aether"))  # its registry
    exported = tmp_path / "indexed.npz"
    argv = ["--dataset", "ml-latest-small", "--ranker-checkpoint", str(checkpoint)]
    argv += ["--no-content-map"]
    assert _run([*argv, "--save-embeddings", str(exported)]) == 0
    out = capsys.readouterr().out
    assert f"ranker {ranker.model_version}" in out
    assert f"({ranker.model_version}@items_v1)" in out  # the pair, registered and promoted
    assert embeddings_model_version(exported) == ranker.model_version
    ids, matrix = load_embeddings(exported)
    assert ids == list(item_ids)
    np.testing.assert_allclose(matrix, ranker.item_embeddings()[1])
    with ItemIndex(uri, alias=f"{namespace}_items", registry=f"{namespace}_aliases") as index:
        # the index answers the ranker's own user vector with the ranker's best items
        user = ranker.encode_user(("1", "2"))
        best = {item_ids[i] for i in np.argsort(-(matrix @ user))[:3]}
        hits = index.search(user[None, :], 3)[0]
        assert {item for item, _ in hits} == best
