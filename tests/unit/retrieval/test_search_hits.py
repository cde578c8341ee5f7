"""Reading one query's hits: pymilvus' id/distance lists when present, else hit by hit."""

from __future__ import annotations

from retrieval.index import _ids_and_distances


class ListsLikeHybridHits(list):  # the shape pymilvus 2.6 returns per query
    def __init__(self, ids: list[str], distances: list[float]) -> None:
        super().__init__()  # materialising hits would be the slow path: keep it empty
        self.ids, self.distances = ids, distances


def test_the_per_query_lists_are_used_without_touching_the_hits() -> None:
    hits = ListsLikeHybridHits(["a", "b"], [0.9, 0.5])
    assert _ids_and_distances(hits) == (["a", "b"], [0.9, 0.5])


def test_hits_without_the_lists_are_read_one_by_one() -> None:
    hits = [{"id": "a", "distance": 0.9}, {"id": "b", "distance": 0.5}]
    assert _ids_and_distances(hits) == (["a", "b"], [0.9, 0.5])
