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
    from retrieval.embeddings import (
        embeddings_model_version,
        load_embeddings,
        ppmi_svd_embeddings,
        save_embeddings,
    )
    from retrieval.index import IndexConfig, ItemIndex
    from retrieval.movielens_catalog import catalog_from_movielens, item_rows

    settings = load_settings()
    data = load_movielens(args.dataset, args.data)
    catalog = catalog_from_movielens(data.items, data.ratings)
    model_version = None
    if args.ranker_checkpoint:
        from ranker.scoring import SASRecRanker

        ranker = SASRecRanker.from_checkpoint(args.ranker_checkpoint)
        item_ids, matrix = ranker.item_embeddings()
        model_version = ranker.model_version
        source = f"ranker {model_version}"
    elif args.embeddings:
        item_ids, matrix = load_embeddings(args.embeddings)
        model_version = embeddings_model_version(args.embeddings)
        source = f"file {args.embeddings}"
    else:
        item_ids, matrix = ppmi_svd_embeddings(
            data.ratings["user_id"].tolist(),
            data.ratings["item_id"].tolist(),
            args.dim,
            seed=args.seed,
        )
        source = f"PPMI-SVD baseline (dim {matrix.shape[1]})"
    if args.content:
        from retrieval.content import MiniLMTextEncoder, embed_cold_items

        before = len(item_ids)
        item_ids, matrix = embed_cold_items(item_ids, matrix, catalog, MiniLMTextEncoder())
        log.info("added %d cold items from their title and categories", len(item_ids) - before)
    if args.save_embeddings:
        save_embeddings(args.save_embeddings, item_ids, matrix, model_version=model_version)
    config = IndexConfig(index_type=args.index_type, keep_versions=args.keep)
    with ItemIndex.from_settings(settings, config) as index:
        version = index.publish(item_rows(item_ids, matrix, catalog))
        print(
            f"indexed {len(item_ids)} items from {source} into {index.active_collection} "
            f"(alias {index.alias} -> version {version}; versions kept: {index.versions()}; "
            f"milvus {settings.milvus.uri})"
        )
    return 0
