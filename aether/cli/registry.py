"""``aether registry``: list, register and promote models and index versions (docs/lifecycle.md).

    aether registry list
    aether registry register-model artifacts/ranker.pt
    aether registry promote --model sasrec-1a2b3c4d5e6f --index items_v3

``promote`` leaves out what is not given: ``--index`` defaults to the index serving now,
``--model`` to the model serving now (``--no-model``: retrieval order). Running servers swap to
the promoted pair within their refresh period, without a restart.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("registry", help="the model and index registry")
    commands = parser.add_subparsers(dest="registry_command", required=True, metavar="COMMAND")

    listing = commands.add_parser("list", help="registered models, indexes and releases")
    listing.add_argument("--json", action="store_true", help="the manifest as JSON")
    listing.set_defaults(func=run_list)

    model = commands.add_parser("register-model", help="register a ranker checkpoint")
    model.add_argument("checkpoint", type=Path)
    model.set_defaults(func=run_register_model)

    promote = commands.add_parser("promote", help="make a (model, index) pair the serving one")
    which = promote.add_mutually_exclusive_group()
    which.add_argument("--model", default=None, help="a registered model version")
    which.add_argument("--no-model", action="store_true", help="no ranker: retrieval order")
    promote.add_argument("--index", default=None, help="a registered index version")
    promote.set_defaults(func=run_promote)


def _registry():  # type: ignore[no-untyped-def]
    from core.settings import load_settings
    from lifecycle.registry import Registry

    settings = load_settings()
    return settings, Registry.for_deployment(settings.deployment)


def run_list(args: argparse.Namespace) -> int:
    from lifecycle.registry import registration_order

    _, registry = _registry()
    manifest = registry.read()
    if args.json:
        print(json.dumps(manifest.to_json(), indent=2, sort_keys=True))
        return 0
    promoted = manifest.promoted
    print(f"registry {registry.root}")
    print(
        f"serving: {f'release {promoted.serial} ({promoted.label})' if promoted else 'nothing promoted'}"
    )
    print("models:")
    for entry in sorted(manifest.models.values(), key=registration_order):
        figures = {
            k: entry.metadata[k]
            for k in ("dataset", "split", "best_validation_ndcg10")
            if k in entry.metadata
        }
        print(f"  {entry.version}  {figures}")
    print("indexes:")
    for entry in sorted(manifest.indexes.values(), key=registration_order):
        state = " (dropped)" if entry.dropped else ""
        print(
            f"  {entry.version}  {entry.item_count} items × {entry.dim}, {entry.source}, "
            f"content map: {'yes' if entry.content_map else 'no'}{state}"
        )
    print("releases:")
    for release in manifest.releases:
        print(f"  {release.serial}  {release.label}")
    return 0


def run_register_model(args: argparse.Namespace) -> int:
    from ranker.checkpoint import load_checkpoint

    _, registry = _registry()
    checkpoint = load_checkpoint(args.checkpoint)
    entry = registry.register_model(args.checkpoint, checkpoint.model_version, checkpoint.metadata)
    print(f"registered model {entry.version} ({registry.path(entry.path)})")
    return 0


def run_promote(args: argparse.Namespace) -> int:
    from core.errors import ConfigError
    from lifecycle.publish import promote

    settings, registry = _registry()
    current = registry.promoted()
    index = args.index or (current.index if current else None)
    if index is None:
        raise ConfigError("nothing is promoted yet: name the index (--index items_vN)")
    model = None if args.no_model else (args.model or (current.model if current else None))
    release = promote(
        settings.milvus, settings.deployment, model=model, index=index, registry=registry
    )
    print(f"promoted release {release.serial}: {release.label}")
    return 0
