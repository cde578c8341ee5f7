"""Retrieval benchmarks: ANN latency/recall on synthetic clustered vectors, candidate recall on
MovieLens. Driven by ``aether bench retrieval``; figures are printed and returned, never asserted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from retrieval.index import IndexConfig, ItemIndex, ItemRows
from retrieval.sources import CandidateSource, Exclusions, UserEncoder


def clustered_vectors(
    n: int, dim: int = 64, clusters: int = 256, spread: float = 0.35, *, seed: int = 0
) -> np.ndarray:
    """``n`` vectors around ``clusters`` random unit centres (Gaussian spread), float32."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = rng.integers(0, clusters, size=n)
    noise = rng.standard_normal((n, dim)).astype(np.float32) * (spread / np.sqrt(dim))
    return centres[labels] + noise


def exact_top_k(matrix: np.ndarray, queries: np.ndarray, k: int) -> list[set[int]]:
    """Brute-force inner-product top-k row indices per query (numpy)."""
    result = []
    for query in queries:
        scores = matrix @ query
        top = np.argpartition(-scores, k - 1)[:k]
        result.append(set(top.tolist()))
    return result


@dataclass(frozen=True)
class AnnFigures:
    n: int
    build_s: float
    insert_s: float
    p50_ms: dict[int, float]
    p99_ms: dict[int, float]
    recall: dict[int, float]


def ann_benchmark(
    uri: str,
    n: int,
    *,
    dim: int = 64,
    ks: Sequence[int] = (100, 500),
    queries: int = 200,
    config: IndexConfig | None = None,
    seed: int = 0,
    warmup: int = 10,
    clusters: int = 256,
) -> AnnFigures:
    """Build an index of ``n`` clustered vectors in Milvus at ``uri``; time single-vector searches."""
    matrix = clustered_vectors(n, dim, clusters, seed=seed)
    rng = np.random.default_rng(seed + 1)
    query_vectors = clustered_vectors(queries, dim, clusters, seed=seed)  # same centres
    query_vectors = (
        query_vectors + rng.standard_normal(query_vectors.shape).astype(np.float32) * 0.05
    )
    ids = [str(i) for i in range(n)]
    index = ItemIndex(uri, alias=f"bench{n}_items", config=config or IndexConfig())
    try:
        started = time.perf_counter()
        version = index.build_version(ItemRows(ids, matrix), progress=True)
        built = time.perf_counter() - started
        index.activate(version)
        p50, p99, recall = {}, {}, {}
        for k in ks:
            exact = exact_top_k(matrix, query_vectors, k)
            for q in query_vectors[:warmup]:
                index.search(q[None, :], k)
            latencies, overlaps = [], []
            for q, truth in tqdm(
                zip(query_vectors, exact, strict=True), total=queries, desc=f"search n={n} k={k}"
            ):
                t0 = time.perf_counter()
                hits = index.search(q[None, :], k)[0]
                latencies.append((time.perf_counter() - t0) * 1000)
                overlaps.append(len({int(i) for i, _ in hits} & truth) / k)
            p50[k] = float(np.percentile(latencies, 50))
            p99[k] = float(np.percentile(latencies, 99))
            recall[k] = float(np.mean(overlaps))
        return AnnFigures(n, built, built, p50, p99, recall)
    finally:
        index.close()


def _not_in(exclusions: Exclusions) -> Callable[[str], bool]:
    return lambda item: item not in exclusions


def remove_lite_db(uri: str) -> None:
    path = Path(uri)
    if path.suffix == ".db" and path.exists():
        path.unlink()


# -- candidate recall on MovieLens (leave-last-out) --------------------------------------------

# (reserved slots per 200, fusion weight); chosen on ML-1M validation items (second-to-last per
# user, 800 sampled users), never on the held-out last items the benchmark reports.
DEFAULT_PLAN: dict[str, tuple[int, float]] = {
    "ann": (10, 1.0),
    "cooccurrence": (10, 2.0),
    "popular": (5, 0.5),
    "fresh": (3, 0.3),
    "content": (3, 0.3),
}


@dataclass(frozen=True)
class RecallFigures:
    users: int
    k: int
    per_source: dict[str, float]
    merged: float
    cold_targets: int
    plan: dict[str, tuple[int, float]]


def candidate_recall(
    dataset: str,
    data_path: str | None,
    uri: str,
    *,
    k: int = 200,
    dim: int = 64,
    plan: dict[str, tuple[int, float]] | None = None,
    max_users: int | None = None,
    seed: int = 0,
    with_content: bool = True,
    item_embeddings: tuple[Sequence[str], np.ndarray] | None = None,
    encoder: UserEncoder | None = None,
) -> RecallFigures:
    """Per user, hold out the last item; share of held-out items in each source's top-``k``
    and in the ``k`` merged candidates. Sources are built from the training part only.

    ``item_embeddings`` + ``encoder`` replace the PPMI-SVD baseline and its mean-history encoder
    (e.g. the ranker's item embeddings and ``encode_user``, trained without the held-out items),
    which is how the two ANN sources are compared on the same split.
    """
    from interactions.movielens import load_movielens
    from retrieval.ann import AnnSource
    from retrieval.content import MiniLMTextEncoder, fit_content_source
    from retrieval.cooccurrence import (
        CooccurrenceSource,
        InMemoryTransitionStore,
        increments_from_sequence,
    )
    from retrieval.embeddings import ppmi_svd_embeddings
    from retrieval.encoders import ItemEmbeddings, MeanHistoryEncoder
    from retrieval.merge import merge_candidates
    from retrieval.movielens import catalog_from_movielens, item_rows
    from retrieval.popular import FreshSource, PopularityTracker, PopularSource
    from retrieval.sources import CandidateFilters, RetrievalRequest

    plan = dict(plan or DEFAULT_PLAN)
    data = load_movielens(dataset, data_path)
    ordered = data.ratings.sort_values(["user_id", "timestamp_ms", "item_id"], kind="stable")
    last = ordered.groupby("user_id").tail(1)
    train = ordered.drop(index=last.index)
    users = sorted(last["user_id"])
    if max_users is not None:
        users = sorted(
            np.random.default_rng(seed).choice(
                users, size=min(max_users, len(users)), replace=False
            )
        )
    targets = dict(
        zip(last["user_id"], zip(last["item_id"], last["timestamp_ms"], strict=True), strict=True)
    )
    histories = {u: tuple(g) for u, g in train.groupby("user_id")["item_id"]}

    catalog = catalog_from_movielens(data.items, data.ratings)
    if item_embeddings is None:
        item_ids, matrix = ppmi_svd_embeddings(
            train["user_id"].tolist(), train["item_id"].tolist(), dim, seed=seed
        )
    else:
        item_ids, matrix = [str(i) for i in item_embeddings[0]], item_embeddings[1]
    embeddings = ItemEmbeddings(item_ids, matrix)
    encoder = encoder or MeanHistoryEncoder(embeddings, last_n=5)
    transitions = InMemoryTransitionStore()
    for history in tqdm(histories.values(), desc="transitions"):
        transitions.apply(increments_from_sequence(history, window=3))
    tracker = PopularityTracker(half_life_ms=30 * 24 * 3600 * 1000)
    tracker.observe_many(zip(train["item_id"], train["timestamp_ms"], strict=True))
    end = int(train["timestamp_ms"].max())

    index = ItemIndex(uri, alias="recall_items", config=IndexConfig(index_type="IVF_FLAT"))
    try:
        index.publish(item_rows(item_ids, matrix, catalog), progress=True)
        sources: dict[str, CandidateSource] = {
            "ann": AnnSource(index, encoder),
            "cooccurrence": CooccurrenceSource(transitions, catalog=catalog),
            "popular": PopularSource(tracker.scores_at(end), catalog),
            "fresh": FreshSource(catalog, window_ms=30 * 24 * 3600 * 1000),
        }
        cold = [i for i in catalog if i not in embeddings]
        if with_content:
            sources["content"], _ = fit_content_source(
                catalog,
                [i for i in item_ids if i in catalog],
                matrix[[n for n, i in enumerate(item_ids) if i in catalog]],
                cold,
                encoder,
                MiniLMTextEncoder(),
            )
        plan = {name: spec for name, spec in plan.items() if name in sources}
        hits = dict.fromkeys(sources, 0)
        merged_hits = cold_targets = 0
        for user in tqdm(users, desc="candidate recall"):
            target, at = targets[user]
            history = histories.get(user, ())
            cold_targets += target not in embeddings
            request = RetrievalRequest(
                k=k,
                history=history,
                exclusions=Exclusions(seen=frozenset(history)),
                filters=CandidateFilters(available_only=True),
                as_of_ms=int(at),
                user_id=user,
            )
            lists = {name: source.candidates(request) for name, source in sources.items()}
            for name, found in lists.items():
                hits[name] += any(c.item_id == target for c in found)
            merged = merge_candidates(  # exactly what CandidateRetriever does with these plans
                [(name, lists[name]) for name in plan],
                [round(plan[name][0] * k / 200) for name in plan],
                k,
                is_eligible=_not_in(request.exclusions),
                weights=[plan[name][1] for name in plan],
            )
            merged_hits += any(c.item_id == target for c in merged)
        n = len(users)
        return RecallFigures(
            users=n,
            k=k,
            per_source={name: hits[name] / n for name in sources},
            merged=merged_hits / n,
            cold_targets=cold_targets,
            plan=plan,
        )
    finally:
        index.close()
