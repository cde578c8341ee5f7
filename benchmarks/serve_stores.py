"""The stores ``aether bench serve`` (``benchmarks.serve``) serves from: what the stream worker and
``aether index`` would have left, written straight into Redis/Feast and Milvus Lite."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.settings import Settings


@dataclass(frozen=True)
class Prepared:
    item_ids: list[str]
    user_ids: list[str]
    transition_anchors: int


def prepare_stores(
    settings: Settings,
    ratings: Any,
    items: Any,
    *,
    history: int = 200,
    seed: int = 0,
    ranker_checkpoint: Path | None = None,
) -> Prepared:
    """Feast repo, Milvus index, embeddings file, item/user rows and transitions for serving.

    The index holds PPMI-SVD embeddings of the ratings, or with ``ranker_checkpoint`` that
    ranker's own item embeddings (as ``aether index --ranker-checkpoint`` leaves it: the server
    then queries Milvus with the ranker's user encoder)."""
    from features.rows import ItemFeatureRow, UserFeatureRow
    from features.store import FeastOnlineStore, apply_repo
    from retrieval.embeddings import ppmi_svd_embeddings, save_embeddings
    from retrieval.index import ItemIndex
    from retrieval.milvus_lite import release_milvus_lite
    from retrieval.movielens_catalog import catalog_from_movielens, item_rows
    from serving.build_pipeline import embeddings_path

    apply_repo(settings.redis, settings.deployment)
    started = time.perf_counter()
    model_version = None
    if ranker_checkpoint is not None:
        from ranker.scoring import SASRecRanker

        ranker = SASRecRanker.from_checkpoint(ranker_checkpoint)
        item_ids, matrix = ranker.item_embeddings()
        model_version = ranker.model_version
        print(f"item embeddings of ranker {model_version}: {len(item_ids)} items")
    else:
        item_ids, matrix = ppmi_svd_embeddings(
            ratings["user_id"].tolist(), ratings["item_id"].tolist(), seed=seed
        )
        print(
            f"PPMI-SVD embeddings of {len(item_ids)} items in {time.perf_counter() - started:.1f} s"
        )
    path = embeddings_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_embeddings(path, item_ids, matrix, model_version=model_version)
    catalog = catalog_from_movielens(items, ratings)
    # The server is another process: close the index and free the Milvus Lite file's lock.
    with ItemIndex.from_settings(settings.milvus, settings.deployment) as index:
        index.publish(item_rows(item_ids, matrix, catalog), progress=False)
    release_milvus_lite(settings.milvus.uri)

    end_ms = int(ratings["timestamp_ms"].max())
    counts = ratings["item_id"].value_counts().to_dict()
    store = FeastOnlineStore(settings.redis, settings.deployment)
    try:
        item_feature_rows = [
            ItemFeatureRow(
                item_id=item_id,
                event_time_ms=end_ms,
                popularity=float(counts.get(item_id, 0)),
                created_time_ms=meta.created_time_ms if meta else None,
                title=meta.title if meta else "",
                categories=tuple(meta.categories) if meta else (),
            )
            for item_id in item_ids
            for meta in [catalog.get(item_id)]
        ]
        sequences = {
            str(user): (list(group["item_id"]), int(group["timestamp_ms"].iloc[-1]))
            for user, group in ratings.groupby("user_id", sort=False)  # ratings are time-ordered
        }
        user_rows = [
            UserFeatureRow(user_id=user, event_time_ms=last_ms, recent_items=tuple(seq[-history:]))
            for user, (seq, last_ms) in sequences.items()
        ]
        for start in range(0, len(item_feature_rows), 500):
            store.write_items(item_feature_rows[start : start + 500])
        for start in range(0, len(user_rows), 500):
            store.write_users(user_rows[start : start + 500])
    finally:
        store.close()
    anchors = write_transitions(settings, [seq for seq, _ in sequences.values()])
    return Prepared(item_ids, sorted(sequences), anchors)


def write_transitions(settings: Settings, sequences: list[list[str]], keep: int = 200) -> int:
    """Each sequence's transitions, as the stream would have applied them; returns anchors."""
    import redis

    from features.transition_store import redis_transition_store
    from retrieval.sources import best_first
    from streams.transitions import increments_from_sequence, merge_increments

    merged = merge_increments(*(increments_from_sequence(seq) for seq in sequences))
    by_anchor: dict[str, dict[str, float]] = {}
    for (anchor, item), weight in merged.items():
        by_anchor.setdefault(anchor, {})[item] = weight
    client = redis.Redis.from_url(settings.redis.url.get_secret_value())
    try:
        # The namespace's key layout, which the worker writes and serving reads.
        store = redis_transition_store(client, settings.namespace, keep)
        anchors = list(by_anchor)
        for start in range(0, len(anchors), 200):
            head: dict[tuple[str, str], float] = {}
            rest: dict[str, float] = {}
            for anchor in anchors[start : start + 200]:
                ranked = best_first(by_anchor[anchor].items())
                head.update({(anchor, item): weight for item, weight in ranked[:keep]})
                rest[anchor] = sum(weight for _, weight in ranked[keep:])
            store.apply(head)
            # The store keeps the top ``keep`` neighbours but the full total of each anchor.
            with client.pipeline(transaction=False) as pipe:
                for anchor, weight in rest.items():
                    if weight > 0:
                        pipe.hincrbyfloat(store.totals_key, anchor, weight)
                pipe.execute()
    finally:
        client.close()
    return len(by_anchor)


def cleanup(settings: Settings, topics: list[str] | None = None) -> None:
    """Delete the namespace's Redis keys, and ``topics`` (on a broker the benchmark did not start:
    a shared broker should not keep the benchmark's impressions)."""
    from stack.redis_server import delete_namespace_keys

    url = settings.redis.url.get_secret_value()
    delete_namespace_keys(url, settings.namespace, cluster=settings.redis.cluster)
    if topics:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
        for topic, future in admin.delete_topics(topics, operation_timeout=10).items():
            try:
                future.result(timeout=15)
            except Exception as exc:  # clean-up must not hide the benchmark's result
                print(f"could not delete topic {topic}: {exc}")
