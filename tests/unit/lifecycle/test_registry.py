"""The model and index registry: register, promote, the manifest readers see (a real folder)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import ConfigError, NotFoundError, SchemaError
from lifecycle.publish import model_to_pair
from lifecycle.registry import NO_MODEL, Registry
from retrieval.embeddings import embeddings_model_version, load_embeddings


def checkpoint(tmp_path: Path, name: str = "ranker.pt", body: bytes = b"weights") -> Path:
    path = tmp_path / name
    path.write_bytes(body)
    return path


def index(registry: Registry, version: str, n: int = 3, **extra) -> None:
    registry.register_index(
        version=version,
        collection=f"ns_{version}",
        item_ids=[f"i{j}" for j in range(n)],
        matrix=np.arange(n * 2, dtype=np.float32).reshape(n, 2),
        embedding_model_version=extra.get("embedding_model_version"),
        source="test vectors",
        content_map=extra.get("content_map"),
    )


def test_an_empty_registry_promotes_nothing(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "reg")
    assert registry.promoted() is None
    assert registry.read().models == {} and registry.read().releases == ()


def test_register_and_promote_a_pair(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "reg")
    model = registry.register_model(checkpoint(tmp_path), "sasrec-aaa", {"dataset": "x"})
    index(registry, "items_v1", embedding_model_version="sasrec-aaa", content_map=np.ones((3, 2)))

    release = registry.promote(model="sasrec-aaa", index="items_v1")

    assert (release.serial, release.label) == (1, "sasrec-aaa@items_v1")
    assert registry.promoted() == release
    assert registry.path(model.path).read_bytes() == b"weights"  # a copy, not a reference
    entry = registry.index("items_v1")
    ids, matrix = load_embeddings(registry.path(entry.embeddings))
    assert ids == ["i0", "i1", "i2"] and matrix.shape == (3, 2)
    assert embeddings_model_version(registry.path(entry.embeddings)) == "sasrec-aaa"
    assert entry.content_map is not None
    with np.load(registry.path(entry.content_map)) as data:
        np.testing.assert_array_equal(data["weights"], np.ones((3, 2)))


def test_the_manifest_stays_standard_json(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "reg")
    registry.register_model(
        checkpoint(tmp_path), "sasrec-aaa", {"best_validation_ndcg10": float("nan"), "x": [1.0]}
    )
    body = json.loads(registry.manifest_path.read_text(), parse_constant=_refuse)
    assert body["models"]["sasrec-aaa"]["metadata"] == {"best_validation_ndcg10": None, "x": [1.0]}


def _refuse(name: str) -> None:
    raise AssertionError(f"{name} is not JSON")


def test_a_release_without_a_model_is_retrieval_order(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "reg")
    index(registry, "items_v1")
    assert registry.promote(model=None, index="items_v1").label == f"{NO_MODEL}@items_v1"


def test_promoting_what_is_not_registered_fails_and_changes_nothing(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "reg")
    index(registry, "items_v1")
    with pytest.raises(NotFoundError):
        registry.promote(model="sasrec-missing", index="items_v1")
    with pytest.raises(NotFoundError):
        registry.promote(model=None, index="items_v9")
    registry.mark_dropped(["items_v1"])
    with pytest.raises(NotFoundError, match="garbage-collected"):
        registry.promote(model=None, index="items_v1")
    assert registry.promoted() is None


def test_versions_are_registered_once(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "reg")
    first = registry.register_model(checkpoint(tmp_path, "a.pt", b"one"), "sasrec-aaa")
    again = registry.register_model(checkpoint(tmp_path, "b.pt", b"two"), "sasrec-aaa")
    assert again == first and registry.path(first.path).read_bytes() == b"one"
    index(registry, "items_v1")
    with pytest.raises(ConfigError):
        index(registry, "items_v1")


def test_a_malformed_manifest_is_a_schema_error(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "reg")
    registry.root.mkdir(parents=True)
    registry.manifest_path.write_text("{not json")
    with pytest.raises(SchemaError):
        registry.read()
    registry.manifest_path.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(SchemaError):
        registry.promoted()


def test_protected_indexes_are_the_serving_one_and_later_candidates(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "reg")
    for n in (1, 2, 3):
        index(registry, f"items_v{n}")
    registry.promote(model=None, index="items_v1")
    registry.promote(model=None, index="items_v2")
    index(registry, "items_v4")  # a candidate, not promoted yet
    assert registry.protected_indexes() == {"items_v2", "items_v4"}
    assert registry.protected_indexes(keep_releases=2) == {"items_v1", "items_v2", "items_v4"}


def test_order_does_not_depend_on_the_clock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every write in one millisecond (a fast machine): what was registered before a promotion
    is still told from what came after it, and the latest model from the first."""
    monkeypatch.setattr("lifecycle.registry._now_ms", lambda: 1_000)
    registry = Registry(tmp_path / "reg")
    for n in (1, 2, 3):
        index(registry, f"items_v{n}")
    registry.promote(model=None, index="items_v2")
    index(registry, "items_v4")
    assert registry.protected_indexes() == {"items_v2", "items_v4"}
    for name in ("b", "a"):  # content hashes sort in no particular order
        registry.register_model(checkpoint(tmp_path, f"{name}.pt", name.encode()), f"sasrec-{name}")
    models = registry.read().models
    assert (models["sasrec-b"].serial, models["sasrec-a"].serial) == (1, 2)
    registry_with_no_release = Registry(tmp_path / "other")
    for name in ("b", "a"):
        registry_with_no_release.register_model(checkpoint(tmp_path, f"{name}.pt"), f"m-{name}")
    assert model_to_pair(registry_with_no_release, None) == "m-a"  # registered last


def test_a_manifest_from_before_serials_is_ordered_by_its_times(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "reg")
    index(registry, "items_v1")
    index(registry, "items_v2")
    registry.promote(model=None, index="items_v1")
    body = json.loads(registry.manifest_path.read_text())
    for entry in body["indexes"].values():
        del entry["serial"]
    del body["releases"][0]["index_serial"]
    body["indexes"]["items_v1"]["registered_ms"] = 100
    body["indexes"]["items_v2"]["registered_ms"] = 300
    body["releases"][0]["promoted_ms"] = 200
    registry.manifest_path.write_text(json.dumps(body))
    assert registry.protected_indexes() == {"items_v1", "items_v2"}
    index(registry, "items_v3")  # the first version with a serial
    assert registry.read().indexes["items_v3"].serial == 1
    registry.promote(model=None, index="items_v3")
    index(registry, "items_v4")
    assert registry.protected_indexes() == {"items_v3", "items_v4"}


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    """Writers take the lock across read-modify-write: every registration survives."""
    registry = Registry(tmp_path / "reg")
    index(registry, "items_v0")
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            other = Registry(registry.root)  # another process would open its own
            index(other, f"items_v{n + 1}")
            other.promote(model=None, index=f"items_v{n + 1}")
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    manifest = registry.read()
    assert len(manifest.indexes) == 9
    assert [r.serial for r in manifest.releases] == list(range(1, 9))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", None]), st.integers(1, 3)), max_size=12))
def test_promotions_serials_grow_and_the_last_one_serves(tmp_path_factory, steps) -> None:
    registry = Registry(tmp_path_factory.mktemp("reg"))
    source = tmp_path_factory.mktemp("ckpt")
    for name in ("a", "b"):
        registry.register_model(checkpoint(source, f"{name}.pt"), f"sasrec-{name}")
    for n in (1, 2, 3):
        index(registry, f"items_v{n}")
    for model, n in steps:
        registry.promote(model=f"sasrec-{model}" if model else None, index=f"items_v{n}")
    manifest = registry.read()
    assert [r.serial for r in manifest.releases] == list(range(1, len(steps) + 1))
    if steps:
        model, n = steps[-1]
        assert manifest.promoted is not None
        assert manifest.promoted.label == f"{f'sasrec-{model}' if model else NO_MODEL}@items_v{n}"
    else:
        assert manifest.promoted is None
