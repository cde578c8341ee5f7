"""``aether index``: item embeddings into a new Milvus collection version, registered and promoted.

Embeddings come from ``--ranker-checkpoint PATH`` (the SASRec ranker's own item embeddings: serving
then queries Milvus with that ranker's user encoder, which retrieves better than the baseline,
docs/benchmarks/retrieval.md), from ``--embeddings PATH`` (an ``.npz`` with ``item_ids`` and
``matrix``) or from the PPMI-SVD baseline over the dataset's interactions. With
``--content``, catalogue items that have no embedding get one from their title and categories
(all-MiniLM-L6-v2 mapped into the item space by ridge regression), so ANN can return cold items.

The version is registered in the model and index registry (``lifecycle``, docs/lifecycle.md) with
its content map (text → item space, fitted here unless ``--no-content-map``: serving maps new
items of the content collection with it) and promoted, unless ``--no-promote``: running servers
swap to it without a restart. With ``--ranker-checkpoint`` the ranker is registered too and the
pair is promoted together.
"""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("index", help="build, register and promote a Milvus item index")
    parser.add_argument(
        "--dataset", default="ml-latest-small", choices=("ml-latest-small", "ml-1m")
    )
    parser.add_argument("--data", default=None, help="dataset folder (default: its usual place)")
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        help="the first N ratings only, in event-time order (as `aether replay --limit N`): the "
        "baseline and the catalogue's popularity are computed from what was replayed",
    )
    parser.add_argument("--dim", type=int, default=64, help="embedding size of the baseline")
    vectors = parser.add_mutually_exclusive_group()
    vectors.add_argument("--embeddings", default=None, help=".npz with item_ids + matrix to index")
    vectors.add_argument(
        "--ranker-checkpoint", default=None, help="index this SASRec checkpoint's item embeddings"
    )
    parser.add_argument("--content", action="store_true", help="embed cold items from their text")
    parser.add_argument(
        "--no-content-map",
        action="store_true",
        help="skip fitting the text → item-space map (new items then reach serving only as "
        "fresh items, with no content source)",
    )
    parser.add_argument(
        "--content-map-items",
        type=int,
        default=1000,
        help="indexed items the content map is fitted on (each is embedded with MiniLM)",
    )
    parser.add_argument(
        "--no-promote", action="store_true", help="register the version without promoting it"
    )
    parser.add_argument(
        "--skip-if-promoted",
        action="store_true",
        help="do nothing when a release is already promoted (a bootstrap job, docker-compose)",
    )
    parser.add_argument("--keep", type=int, default=2, help="versions to keep after the switch")
    parser.add_argument(
        "--index-type", default="auto", choices=("auto", "IVF_FLAT", "FLAT", "AUTOINDEX")
    )
    parser.add_argument("--save-embeddings", default=None, help="also write the indexed .npz here")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from core.settings import load_settings
    from interactions.movielens import load_movielens
    from lifecycle.publish import publish_index
    from lifecycle.registry import Registry
    from retrieval.embeddings import save_embeddings
    from retrieval.index import IndexConfig
    from retrieval.item_vectors import (
        baseline_item_vectors,
        file_item_vectors,
        ranker_item_vectors,
        with_cold_items,
    )
    from retrieval.movielens_catalog import catalog_from_movielens

    settings = load_settings()
    registry = Registry.for_deployment(settings.deployment)
    if args.skip_if_promoted and (promoted := registry.promoted()) is not None:
        print(f"release {promoted.serial} ({promoted.label}) is promoted: nothing to do")
        return 0
    data = load_movielens(args.dataset, args.data)
    ratings = data.ratings if args.limit is None else data.ratings.iloc[: args.limit]
    catalog = catalog_from_movielens(data.items, ratings)
    model = None
    if args.ranker_checkpoint:
        vectors = ranker_item_vectors(args.ranker_checkpoint)
        from pathlib import Path

        from ranker.checkpoint import load_checkpoint

        metadata = load_checkpoint(args.ranker_checkpoint).metadata
        model = registry.register_model(
            Path(args.ranker_checkpoint), str(vectors.model_version), metadata
        ).version
    elif args.embeddings:
        vectors = file_item_vectors(args.embeddings)
    else:
        vectors = baseline_item_vectors(ratings, args.dim, seed=args.seed)
    text_encoder = None
    if args.content or not args.no_content_map:
        from retrieval.content import MiniLMTextEncoder

        text_encoder = MiniLMTextEncoder()
    content_map = None
    if not args.no_content_map:
        from retrieval.content import fit_content_map

        assert text_encoder is not None
        content_map = fit_content_map(
            vectors.item_ids,
            vectors.matrix,
            catalog,
            text_encoder,
            max_items=args.content_map_items,
        )
    if args.content:
        assert text_encoder is not None
        before = len(vectors.item_ids)
        vectors = with_cold_items(vectors, catalog, text_encoder)
        log.info(
            "added %d cold items from their title and categories", len(vectors.item_ids) - before
        )
    if args.save_embeddings:
        save_embeddings(
            args.save_embeddings,
            vectors.item_ids,
            vectors.matrix,
            model_version=vectors.model_version,
        )
    published = publish_index(
        settings.milvus,
        settings.deployment,
        vectors,
        catalog,
        content_map=content_map,
        promote=not args.no_promote,
        model=model,
        config=IndexConfig(index_type=args.index_type, keep_versions=args.keep),
        registry=registry,
    )
    entry = published.index
    what = (
        f"promoted release {published.release.serial} ({published.release.label})"
        if published.release is not None
        else f"registered, not promoted (aether registry promote --index {entry.version})"
    )
    print(
        f"indexed {entry.item_count} items from {entry.source} into {entry.collection} "
        f"(index {entry.version}, content map: {'yes' if entry.content_map else 'no'}; {what}; "
        f"dropped: {', '.join(published.dropped) or 'none'}; milvus {settings.milvus.uri})"
    )
    return 0
