"""The demo's system changing while it runs (``aether.demo``): a release published (checkpoint,
its item embeddings, a content map), new titles published mid-loop and placed by the running
server, and the ranker retrained from the worker's own offline log and swapped in."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import pandas as pd

from core.settings import Settings
from streams.publish import producer_for

if TYPE_CHECKING:
    from aether.demo import DemoConfig
    from interactions.movielens import MovieLens
    from lifecycle.publish import Published
    from retrieval.catalog import ItemCatalog
    from retrieval.content import TextEncoder
    from retrieval.index import ItemIndex
    from serving.build_pipeline import ServingApp


def publish_release(
    settings: Settings,
    index: ItemIndex,
    checkpoint: Path,
    catalog: ItemCatalog,
    encoder: TextEncoder,
    items: int,
) -> Published:
    """What ``aether train`` + ``aether index --ranker-checkpoint`` leave: the checkpoint
    registered, its own item embeddings indexed in Milvus with a content map (text → its item
    space, fitted on ``items`` titles: how new items get a place), the pair promoted."""
    from lifecycle.publish import publish_index, register_checkpoint
    from retrieval.content import fit_content_map
    from retrieval.item_vectors import ranker_item_vectors

    model, _ = register_checkpoint(settings.milvus, settings.deployment, checkpoint)
    vectors = ranker_item_vectors(checkpoint)
    content_map = fit_content_map(
        vectors.item_ids, vectors.matrix, catalog, encoder, max_items=items
    )
    return publish_index(
        settings.milvus,
        settings.deployment,
        vectors,
        catalog,
        content_map=content_map,
        model=model.version,
        progress=False,
        index=index,
    )


def new_titles(
    data: MovieLens, future: pd.DataFrame, cutoff: int, count: int
) -> list[tuple[str, str, tuple[str, ...]]]:
    """The ``count`` titles first rated after the cut-off that the future liked most: films
    released while the loop runs, (id, title, categories)."""
    first = data.ratings.groupby("item_id")["timestamp_ms"].min()
    new = set(first[first >= cutoff].index)
    liked = future[(future["rating"] >= 4) & future["item_id"].isin(new)]
    top = liked.groupby("item_id").size().sort_values(ascending=False, kind="stable")
    chosen = set(top.index[:count])
    rows = data.items[data.items["item_id"].isin(chosen)]
    return [
        (item, title, tuple(categories))
        for item, title, categories in zip(
            rows["item_id"], rows["title"], rows["categories"], strict=True
        )
    ]


def publish_new_titles(
    settings: Settings,
    app: ServingApp,
    titles: list[tuple[str, str, tuple[str, ...]]],
    at_ms: int,
    say: Callable[[str], None],
) -> None:
    """Publish ``titles`` on ``<ns>.items`` as catalogue updates at ``at_ms``; the worker's
    catalogue agent embeds them into the content collection, and the running server places them
    in its item space at its next catalogue refresh. Waits (at most a minute) until it has."""
    producer = producer_for(settings)
    for item, title, categories in titles:
        body = {"event_id": f"demo:new:{item}", "item_id": item, "title": title,
                "categories": list(categories), "event_time": at_ms, "created_time": at_ms}  # fmt: skip
        producer.produce(settings.topic("items"), key=item.encode(), value=orjson.dumps(body))
    producer.flush(30)
    published = time.monotonic()
    say(f"      [new items] {len(titles)} titles published to {settings.topic('items')}:")
    say("        " + "; ".join(title for _, title, _ in titles))
    wanted = {item for item, _, _ in titles}
    placed: set[str] = set()
    while time.monotonic() - published < 60:
        app.refresh()
        placed = wanted & set(app.pipeline.state.view.new_item_ids)
        if placed == wanted:
            break
        time.sleep(1.0)
    say(
        f"      {len(placed)} of {len(titles)} embedded by the worker and placed in the serving "
        f"item space {time.monotonic() - published:.0f} s after publishing (no restart)"
    )


def retrain_from_log(
    settings: Settings,
    app: ServingApp,
    index: ItemIndex,
    config: DemoConfig,
    catalog: ItemCatalog,
    encoder: TextEncoder,
    say: Callable[[str], None],
) -> None:
    """The learning loop closed: train the ranker again on the worker's own offline log (the
    events it accepted, the loop's feedback included; no dataset file), index its item
    embeddings, promote the pair, and let the running server swap to it (no restart)."""
    from lifecycle.from_log import log_dataset_name, log_split
    from ranker.fit import fit_and_save
    from ranker.train import TrainConfig

    before = app.live.release.label
    split = log_split(settings.deployment, "loo")
    say(
        f"      [retrain] ranker from the worker's offline log: {len(split.train):,} users' "
        f"sequences, up to {config.retrain_minutes:g} min"
    )
    out = settings.data_dir / "artifacts" / f"{settings.namespace}_ranker_from_log.pt"
    result = fit_and_save(
        split,
        log_dataset_name(settings.deployment),
        out,
        {"max_length": 200},
        TrainConfig(max_minutes=config.retrain_minutes, seed=config.seed, progress=False),
    )
    release = publish_release(
        settings, index, out, catalog, encoder, config.content_map_items
    ).release
    app.refresh()  # what the server's refresh thread does: the promoted pair swaps in
    say(
        f"      promoted {release.label if release else '?'} (validation NDCG@10 "
        f"{result.best_validation_ndcg10:.3f} on the log's own last-item split, "
        f"{result.train_seconds:.0f}s); serving {app.live.release.label}, was {before}"
    )
