"""``aether index``: build item embeddings, load them into Milvus as a new version, switch the alias.

Embeddings come from ``--ranker-checkpoint PATH`` (the SASRec ranker's own item embeddings: serving
then queries Milvus with that ranker's user encoder, which retrieves better than the baseline,
docs/benchmarks/retrieval.md), from ``--embeddings PATH`` (an ``.npz`` with ``item_ids`` and
``matrix``) or from the PPMI-SVD baseline over the dataset's interactions. With
``--content``, catalogue items that have no embedding get one from their title and categories
(all-MiniLM-L6-v2 mapped into the item space by ridge regression), so ANN can return cold items.
"""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("index", help="build and publish the Milvus item index")
    parser.add_argument(
        "--dataset", default="ml-latest-small", choices=("ml-latest-small", "ml-1m")
    )
    parser.add_argument("--data", default=None, help="dataset folder (default: its usual place)")
    parser.add_argument("--dim", type=int, default=64, help="embedding size of the baseline")
    vectors = parser.add_mutually_exclusive_group()
    vectors.add_argument("--embeddings", default=None, help=".npz with item_ids + matrix to index")
    vectors.add_argument(
        "--ranker-checkpoint", default=None, help="index this SASRec checkpoint's item embeddings"
    )
    parser.add_argument("--content", action="store_true", help="embed cold items from their text")
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
    from retrieval.embeddings import save_embeddings
    from retrieval.index import IndexConfig, ItemIndex
    from retrieval.item_vectors import (
        baseline_item_vectors,
        file_item_vectors,
        ranker_item_vectors,
        with_cold_items,
    )
    from retrieval.movielens_catalog import catalog_from_movielens, item_rows

    settings = load_settings()
    data = load_movielens(args.dataset, args.data)
    catalog = catalog_from_movielens(data.items, data.ratings)
    if args.ranker_checkpoint:
        vectors = ranker_item_vectors(args.ranker_checkpoint)
    elif args.embeddings:
        vectors = file_item_vectors(args.embeddings)
    else:
        vectors = baseline_item_vectors(data.ratings, args.dim, seed=args.seed)
    if args.content:
        from retrieval.content import MiniLMTextEncoder

        before = len(vectors.item_ids)
        vectors = with_cold_items(vectors, catalog, MiniLMTextEncoder())
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
    config = IndexConfig(index_type=args.index_type, keep_versions=args.keep)
    with ItemIndex.from_settings(settings.milvus, settings.deployment, config) as index:
        version = index.publish(item_rows(vectors.item_ids, vectors.matrix, catalog))
        print(
            f"indexed {len(vectors.item_ids)} items from {vectors.source} into "
            f"{index.active_collection} (alias {index.alias} -> version {version}; versions "
            f"kept: {index.versions()}; milvus {settings.milvus.uri})"
        )
    return 0
