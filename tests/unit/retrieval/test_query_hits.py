"""Reading Milvus' reply without pymilvus' per-hit objects (``retrieval.milvus_search``): split
per query by ``topks``, string or integer ids, and exclusions removed after an over-fetch."""

from __future__ import annotations

import numpy as np

from retrieval.milvus_client import import_pymilvus
from retrieval.milvus_search import first_hits, split_hits

import_pymilvus()
from pymilvus.grpc_gen import schema_pb2  # noqa: E402  (after import_pymilvus)


def reply(ids: list[str] | list[int], scores: list[float], topks: list[int]) -> object:
    data = schema_pb2.SearchResultData(scores=scores, topks=topks)
    if ids and isinstance(ids[0], int):
        data.ids.int_id.data.extend(ids)
    else:
        data.ids.str_id.data.extend(ids)
    return data


def test_each_query_gets_its_topk_hits_in_order() -> None:
    hits = split_hits(reply(["a", "b", "c", "d", "e"], [5, 4, 3, 9, 8], [3, 2]), 2)
    assert [[i for i, _ in h] for h in hits] == [["a", "b", "c"], ["d", "e"]]
    assert [[s for _, s in h] for h in hits] == [[5.0, 4.0, 3.0], [9.0, 8.0]]


def test_integer_ids_are_read_as_strings() -> None:
    (hits,) = split_hits(reply([7, 3], [0.5, 0.25], [2]), 1)
    assert hits == [("7", 0.5), ("3", 0.25)]


def test_a_reply_without_hits_gives_every_query_none() -> None:
    assert [len(h) for h in split_hits(schema_pb2.SearchResultData(), 3)] == [0, 0, 0]


def test_scores_are_milvus_float32_values_widened_exactly() -> None:
    (hits,) = split_hits(reply(["a"], [0.1], [1]), 1)
    assert hits[0][1] == float(np.float32(0.1))  # what pymilvus' Hit gives for the same reply


def test_without_removes_excluded_ids_then_cuts_to_k() -> None:
    hits = [("a", 4.0), ("b", 3.0), ("c", 2.0), ("d", 1.0)]
    assert first_hits(hits, frozenset({"b"}), 2) == [("a", 4.0), ("c", 2.0)]
    assert first_hits(hits, frozenset(), 3) == [("a", 4.0), ("b", 3.0), ("c", 2.0)]
    assert first_hits(hits, frozenset({"a", "b", "c", "d"}), 2) == []
