"""MovieLens loaders: the shipped ``ml-latest-small`` and ``ml-1m`` from a path.

Both return the same frames, ids as strings and times as epoch milliseconds, sorted by
``(timestamp_ms, user_id, item_id)`` so every consumer sees one deterministic event-time order:

* ratings: ``user_id`` (str), ``item_id`` (str), ``rating`` (float32), ``timestamp_ms`` (int64)
* items:   ``item_id`` (str), ``title`` (str), ``categories`` (tuple[str, ...])
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from core.errors import NotFoundError, SchemaError
from interactions.dismissals import with_dismissals
from interactions.sequences import Split, filter_rare_items, split_of_kind

DATASETS = ("ml-latest-small", "ml-1m")
SHIPPED_DIR = Path(__file__).parent / "data" / "ml-latest-small"
SHARED_ML1M_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "ml-1m"


@dataclass(frozen=True)
class MovieLens:
    name: str
    ratings: pd.DataFrame
    items: pd.DataFrame


def default_path(name: str) -> Path:
    """Where a dataset is looked for when no ``--data`` is given."""
    if name == "ml-latest-small":
        return SHIPPED_DIR
    if name == "ml-1m":
        return SHARED_ML1M_DIR
    raise SchemaError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


def load_movielens(name: str, path: str | Path | None = None) -> MovieLens:
    """Load ratings and items of ``name`` from ``path`` (a folder), or from its default place."""
    folder = Path(path) if path is not None else default_path(name)
    if name == "ml-latest-small":
        ratings, items = _read_csv_layout(folder)
    elif name == "ml-1m":
        ratings, items = _read_dat_layout(folder)
    else:
        raise SchemaError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    ratings = ratings.sort_values(["timestamp_ms", "user_id", "item_id"], kind="stable")
    return MovieLens(name=name, ratings=ratings.reset_index(drop=True), items=items)


def load_split(
    name: str,
    path: str | Path | None,
    kind: str,
    temporal_requests: str = "every",
    *,
    dismissals: bool = False,
) -> Split:
    """The ``kind`` split (``interactions.sequences.SPLIT_KINDS``) of dataset ``name``, rare
    items filtered: what ``aether train`` fits a ranker on, rebuilt the same way wherever a
    checkpoint's split is needed again. ``dismissals``: low ratings become training dismissals
    (``interactions.dismissals``); the validation and test requests stay the same."""
    ratings = filter_rare_items(load_movielens(name, path).ratings)
    split = split_of_kind(ratings, kind, temporal_requests)
    return with_dismissals(split, ratings) if dismissals else split


def _require(path: Path) -> Path:
    if not path.is_file():
        raise NotFoundError(f"{path} not found (pass --data PATH pointing at the dataset folder)")
    return path


def _finish(ratings: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": ratings["user_id"].astype(str),
            "item_id": ratings["item_id"].astype(str),
            "rating": ratings["rating"].astype("float32"),
            "timestamp_ms": ratings["timestamp"].astype("int64") * 1000,
        }
    )


def _split_categories(genres: pd.Series) -> list[tuple[str, ...]]:
    return [
        tuple(g for g in str(text).split("|") if g and g != "(no genres listed)") for text in genres
    ]


def _read_csv_layout(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    raw = pd.read_csv(_require(folder / "ratings.csv"))
    raw = raw.rename(columns={"userId": "user_id", "movieId": "item_id"})
    movies = pd.read_csv(_require(folder / "movies.csv"))
    items = pd.DataFrame(
        {
            "item_id": movies["movieId"].astype(str),
            "title": movies["title"].astype(str),
            "categories": _split_categories(movies["genres"]),
        }
    )
    return _finish(raw), items


def _read_dat_layout(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    raw = pd.read_csv(
        _require(folder / "ratings.dat"),
        sep="::",
        engine="python",
        names=["user_id", "item_id", "rating", "timestamp"],
    )
    movies = pd.read_csv(
        _require(folder / "movies.dat"),
        sep="::",
        engine="python",
        names=["item_id", "title", "genres"],
        encoding="latin-1",
    )
    items = pd.DataFrame(
        {
            "item_id": movies["item_id"].astype(str),
            "title": movies["title"].astype(str),
            "categories": _split_categories(movies["genres"]),
        }
    )
    return _finish(raw), items
