"""Retrieval benchmarks: ANN latency/recall on synthetic clustered vectors, candidate recall on
MovieLens. Driven by ``aether bench retrieval``; figures are printed and returned, never asserted.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from retrieval.build_retriever import DEFAULT_PLAN
from retrieval.index import IndexConfig, ItemIndex, ItemRows
from retrieval.sources import Candidate, CandidateSource, Exclusions, UserEncoder


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
    alias: str | None = None,
) -> AnnFigures:
    """Build an index of ``n`` clustered vectors in Milvus at ``uri``; time single-vector searches."""
    matrix = clustered_vectors(n, dim, clusters, seed=seed)
    rng = np.random.default_rng(seed + 1)
    query_vectors = clustered_vectors(queries, dim, clusters, seed=seed)  # same centres
    query_vectors = (
        query_vectors + rng.standard_normal(query_vectors.shape).astype(np.float32) * 0.05
    )
    ids = [str(i) for i in range(n)]
    index = ItemIndex(uri, alias=alias or f"bench{n}_items", config=config or IndexConfig())
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


# -- candidate recall on MovieLens (leave-last-out) --------------------------------------------

Plan = dict[str, tuple[int, float]]  # source -> (reserved slots per 200, fusion weight)


def plan_grid(base: Mapping[str, tuple[int, float]] = DEFAULT_PLAN) -> list[Plan]:
    """The plans ``candidate_recall(tune_plan=True)`` compares on validation items: the base plan,
    plus every combination of ANN and co-occurrence slots and weights (the two personalised
    sources; popular, fresh and content keep the base plan's small guaranteed share)."""
    plans = [dict(base)]
    for ann_slots, ann_weight, co_slots, co_weight in itertools.product(
        (10, 50, 100), (1.0, 2.0, 4.0), (10, 50), (1.0, 2.0)
    ):
        plan = dict(base)
        plan["ann"] = (ann_slots, ann_weight)
        plan["cooccurrence"] = (co_slots, co_weight)
        if plan not in plans:
            plans.append(plan)
    return plans


@dataclass(frozen=True)
class RecallFigures:
    users: int
    k: int
    per_source: dict[str, float]
    merged: float
    cold_targets: int
    plan: Plan
    # When the plan was chosen on validation items: its merged recall there, and how many it beat.
    validation_merged: float | None = None
    plans_compared: int = 0


@dataclass(frozen=True)
class _Split:
    """Per user: the history before the target (oldest first), the target and its event time."""

    train: pd.DataFrame
    histories: dict[str, tuple[str, ...]]
    targets: dict[str, tuple[str, int]]


def _split(ordered: pd.DataFrame, held_out: int) -> _Split:
    """Hold out each user's last ``held_out`` events; the first of them is the target
    (``held_out=1``: the test item; ``2``: the validation item, the test item unseen)."""
    tail = ordered.groupby("user_id").tail(held_out)
    train = ordered.drop(index=tail.index)
    first = tail.groupby("user_id").head(1)
    targets = {
        u: (i, int(t))
        for u, i, t in zip(first["user_id"], first["item_id"], first["timestamp_ms"], strict=True)
    }
    histories = {u: tuple(g) for u, g in train.groupby("user_id")["item_id"]}
    return _Split(train, histories, targets)


@dataclass(frozen=True)
class _SourceLists:
    """Every source's answer for every sampled user, so many plans can be merged from them."""

    lists: dict[str, dict[str, list[Candidate]]]  # user -> source -> candidates
    exclusions: dict[str, Exclusions]
    targets: dict[str, str]
    cold_targets: int


def candidate_recall(
    dataset: str,
    data_path: str | None,
    uri: str,
    *,
    k: int = 200,
    dim: int = 64,
    plan: Plan | None = None,
    tune_plan: bool = False,
    max_users: int | None = None,
    seed: int = 0,
    with_content: bool = True,
    item_embeddings: tuple[Sequence[str], np.ndarray] | None = None,
    encoder: UserEncoder | None = None,
) -> RecallFigures:
    """Per user, hold out the last item; share of held-out items in each source's top-``k``
    and in the ``k`` merged candidates. Sources are built from the training part only.

    ``tune_plan``: first choose the plan among ``plan_grid(plan)`` by merged recall on the
    validation items (each user's second-to-last item, sources rebuilt without the last two
    items), then report the held-out last items with that plan. The test items never take part
    in the choice.

    ``item_embeddings`` + ``encoder`` replace the PPMI-SVD baseline and its mean-history encoder
    (e.g. the ranker's item embeddings and ``encode_user``, trained without the held-out items),
    which is how the two ANN sources are compared on the same split.
    """
    from interactions.movielens import load_movielens
    from retrieval.content import MiniLMTextEncoder

    base = dict(plan or DEFAULT_PLAN)
    data = load_movielens(dataset, data_path)
    ordered = data.ratings.sort_values(["user_id", "timestamp_ms", "item_id"], kind="stable")
    users = sorted(ordered["user_id"].unique())
    if max_users is not None:
        rng = np.random.default_rng(seed)
        users = sorted(rng.choice(users, size=min(max_users, len(users)), replace=False))
    text_encoder = MiniLMTextEncoder() if with_content else None
    index = ItemIndex(uri, alias="recall_items", config=IndexConfig(index_type="IVF_FLAT"))
    try:

        def answers(held_out: int) -> _SourceLists:
            return _source_lists(
                data, ordered, held_out, users, index, k=k, dim=dim, seed=seed,
                text_encoder=text_encoder, item_embeddings=item_embeddings, encoder=encoder,
            )  # fmt: skip

        chosen, validation_merged, compared = base, None, 0
        if tune_plan:
            validation = answers(held_out=2)
            grid = [_usable(p, validation) for p in plan_grid(base)]
            scored = [(merged_recall(validation, p, k), n, p) for n, p in enumerate(grid)]
            validation_merged, _, chosen = max(scored, key=lambda s: (s[0], -s[1]))
            compared = len(grid)
        test = answers(held_out=1)
        chosen = _usable(chosen, test)
        n = len(test.targets)
        per_source = {
            name: sum(
                any(c.item_id == test.targets[u] for c in lists[name])
                for u, lists in test.lists.items()
            )
            / n
            for name in next(iter(test.lists.values()))
        }
        return RecallFigures(
            users=n,
            k=k,
            per_source=per_source,
            merged=merged_recall(test, chosen, k),
            cold_targets=test.cold_targets,
            plan=chosen,
            validation_merged=validation_merged,
            plans_compared=compared,
        )
    finally:
        index.close()


def _usable(plan: Mapping[str, tuple[int, float]], answers: _SourceLists) -> Plan:
    """``plan`` restricted to the sources that were built (content is optional)."""
    built = next(iter(answers.lists.values()))
    return {name: spec for name, spec in plan.items() if name in built}


def merged_recall(answers: _SourceLists, plan: Plan, k: int) -> float:
    """Share of users whose target is among the ``k`` candidates merged with ``plan``, exactly as
    ``CandidateRetriever`` merges them."""
    from retrieval.merge import merge_candidates

    hits = 0
    for user, lists in answers.lists.items():
        merged = merge_candidates(
            [(name, lists[name]) for name in plan],
            [math.ceil(plan[name][0] * k / 200) for name in plan],
            k,
            is_eligible=_not_in(answers.exclusions[user]),
            weights=[plan[name][1] for name in plan],
        )
        hits += any(c.item_id == answers.targets[user] for c in merged)
    return hits / max(1, len(answers.lists))


def _source_lists(
    data: Any,
    ordered: pd.DataFrame,
    held_out: int,
    users: Sequence[str],
    index: ItemIndex,
    *,
    k: int,
    dim: int,
    seed: int,
    text_encoder: Any,
    item_embeddings: tuple[Sequence[str], np.ndarray] | None,
    encoder: UserEncoder | None,
) -> _SourceLists:
    """Build every source from the events before the held-out ones; ask each for every user."""
    from features.transition_store import InMemoryTransitionStore
    from retrieval.ann import AnnSource
    from retrieval.content import fit_content_source
    from retrieval.cooccurrence import CooccurrenceSource
    from retrieval.embeddings import ppmi_svd_embeddings
    from retrieval.encoders import ItemEmbeddings, MeanHistoryEncoder
    from retrieval.movielens_catalog import catalog_from_movielens, item_rows
    from retrieval.popular import FreshSource, PopularityTracker, PopularSource
    from retrieval.sources import CandidateFilters, RetrievalRequest
    from streams.transitions import increments_from_sequence

    split = _split(ordered, held_out)
    train = split.train
    catalog = catalog_from_movielens(data.items, data.ratings)
    if item_embeddings is None:
        item_ids, matrix = ppmi_svd_embeddings(
            train["user_id"].tolist(), train["item_id"].tolist(), dim, seed=seed
        )
    else:
        item_ids, matrix = [str(i) for i in item_embeddings[0]], item_embeddings[1]
    embeddings = ItemEmbeddings(item_ids, matrix)
    user_encoder = encoder or MeanHistoryEncoder(embeddings, last_n=5)
    transitions = InMemoryTransitionStore()
    for history in tqdm(split.histories.values(), desc="transitions"):
        transitions.apply(increments_from_sequence(history, window=3))
    tracker = PopularityTracker(half_life_ms=30 * 24 * 3600 * 1000)
    tracker.observe_many(zip(train["item_id"], train["timestamp_ms"], strict=True))
    end = int(train["timestamp_ms"].max())
    index.publish(item_rows(item_ids, matrix, catalog), progress=True)
    sources: dict[str, CandidateSource] = {
        "ann": AnnSource(index, user_encoder),
        "cooccurrence": CooccurrenceSource(transitions, catalog=catalog),
        "popular": PopularSource(tracker.scores_at(end), catalog),
        "fresh": FreshSource(catalog, window_ms=30 * 24 * 3600 * 1000),
    }
    if text_encoder is not None:
        cold = [i for i in catalog if i not in embeddings]
        known = [n for n, i in enumerate(item_ids) if i in catalog]
        sources["content"], _ = fit_content_source(
            catalog, [item_ids[n] for n in known], matrix[known], cold, user_encoder, text_encoder
        )
    lists: dict[str, dict[str, list[Candidate]]] = {}
    exclusions: dict[str, Exclusions] = {}
    targets: dict[str, str] = {}
    cold_targets = 0
    label = "validation" if held_out > 1 else "test"
    for user in tqdm(users, desc=f"candidate recall ({label} items)"):
        if user not in split.targets:
            continue
        target, at = split.targets[user]
        history = split.histories.get(user, ())
        cold_targets += target not in embeddings
        exclusions[user] = Exclusions(seen=frozenset(history))
        request = RetrievalRequest(
            k=k,
            history=history,
            exclusions=exclusions[user],
            filters=CandidateFilters(available_only=True),
            as_of_ms=at,
            user_id=user,
        )
        lists[user] = {name: source.candidates(request) for name, source in sources.items()}
        targets[user] = target
    return _SourceLists(lists, exclusions, targets, cold_targets)
