"""PPMI-SVD baseline, the .npz format, the mean-history encoder, ridge mapping, content source."""

import numpy as np
import pytest

from core.errors import NotFoundError, SchemaError
from retrieval.catalog import ItemCatalog, ItemMeta
from retrieval.content import ContentSource, RidgeMap, embed_cold_items, item_text
from retrieval.embeddings import (
    embeddings_model_version,
    load_embeddings,
    ppmi_svd_embeddings,
    save_embeddings,
)
from retrieval.encoders import ItemEmbeddings, MeanHistoryEncoder
from retrieval.sources import Exclusions, RetrievalRequest


def _interactions() -> tuple[list[str], list[str]]:
    users, items = [], []
    for u in range(40):
        group = ["a", "b", "c"] if u % 2 else ["x", "y", "z"]
        for item in group:
            users.append(f"u{u}")
            items.append(item)
    return users, items


def test_ppmi_svd_puts_co_consumed_items_together_deterministically() -> None:
    users, items = _interactions()
    ids, matrix = ppmi_svd_embeddings(users, items, dim=2, seed=0, normalize=True)
    _, again = ppmi_svd_embeddings(users, items, dim=2, seed=0, normalize=True)
    assert ids == ["a", "b", "c", "x", "y", "z"] and matrix.shape == (6, 2)
    np.testing.assert_allclose(matrix, again)
    row = {item: n for n, item in enumerate(ids)}
    assert matrix[row["a"]] @ matrix[row["b"]] > matrix[row["a"]] @ matrix[row["x"]]


def test_npz_round_trip_and_errors(tmp_path) -> None:
    path = tmp_path / "e.npz"
    save_embeddings(path, ["i1", "i2"], np.eye(2, dtype=np.float32))
    ids, matrix = load_embeddings(path)
    assert ids == ["i1", "i2"] and matrix.dtype == np.float32
    with pytest.raises(NotFoundError):
        load_embeddings(tmp_path / "missing.npz")
    np.savez(tmp_path / "bad.npz", item_ids=np.array(["a"]), matrix=np.zeros((2, 2)))
    with pytest.raises(SchemaError):
        load_embeddings(tmp_path / "bad.npz")


def test_mean_history_encoder_averages_the_last_n_known_items() -> None:
    embeddings = ItemEmbeddings(
        ["a", "b", "c"], np.array([[1, 0], [0, 1], [1, 1]], dtype=np.float32)
    )
    encoder = MeanHistoryEncoder(embeddings, last_n=2)
    np.testing.assert_allclose(encoder.encode_user(("a", "unknown", "b", "c")), [0.5, 1.0])
    assert encoder.encode_user(("unknown",)) is None


def test_ridge_map_recovers_a_linear_map() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 5)).astype(np.float32)
    w = rng.standard_normal((5, 3)).astype(np.float32)
    ridge = RidgeMap(alpha=1e-6).fit(x, x @ w + 0.5)
    np.testing.assert_allclose(ridge.predict(x[:3]), x[:3] @ w + 0.5, atol=1e-3)


class ConstantEncoder:
    def encode_user(self, history: tuple[str, ...]) -> np.ndarray | None:
        return np.array([1.0, 0.0], dtype=np.float32) if history else None


def test_content_source_scores_cold_items_with_the_user_vector() -> None:
    vectors = np.array([[0.1, 0.0], [0.9, 0.0], [0.5, 0.0]], dtype=np.float32)
    source = ContentSource(["c1", "c2", "c3"], vectors, ConstantEncoder())
    found = source.candidates(
        RetrievalRequest(k=2, history=("h",), exclusions=Exclusions(seen=frozenset({"c2"})))
    )
    assert [c.item_id for c in found] == ["c3", "c1"] and found[0].source == "content"
    assert source.candidates(RetrievalRequest(k=2)) == []  # no history, no vector


def test_item_text_joins_title_and_categories() -> None:
    assert (
        item_text(ItemMeta("1", "Heat (1995)", ("Action", "Crime"))) == "Heat (1995). Action, Crime"
    )


class LengthTextEncoder:
    """A deterministic stand-in for MiniLM: (len(text), 1) per text."""

    def encode(self, texts, progress=False):
        return np.array([[len(t), 1.0] for t in texts], dtype=np.float32)


def test_cold_items_are_appended_with_mapped_text_embeddings() -> None:
    catalog = ItemCatalog(
        [ItemMeta("a", "x"), ItemMeta("b", "xxx"), ItemMeta("c", "xxxxx"), ItemMeta("cold", "xx")]
    )
    matrix = np.array([[3.0], [5.0], [7.0]], dtype=np.float32)  # = len(item_text) + 0
    ids, extended = embed_cold_items(["a", "b", "c"], matrix, catalog, LengthTextEncoder(), 1e-6)
    assert ids == ["a", "b", "c", "cold"] and extended.shape == (4, 1)
    assert extended[3, 0] == pytest.approx(4.0, abs=1e-3)  # "xx. " is 3 chars: 3 + 1


def test_ranker_embeddings_carry_their_model_version(tmp_path):
    baseline, ranker = tmp_path / "baseline.npz", tmp_path / "ranker.npz"
    save_embeddings(baseline, ["i1"], np.ones((1, 2), dtype=np.float32))
    save_embeddings(ranker, ["i1"], np.ones((1, 2), dtype=np.float32), model_version="sasrec-1")
    assert embeddings_model_version(baseline) is None
    assert embeddings_model_version(ranker) == "sasrec-1"
    assert load_embeddings(ranker)[0] == ["i1"]
