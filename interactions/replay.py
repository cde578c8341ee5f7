"""MovieLens ratings → interaction and catalogue events, for replaying a dataset onto Kafka. Pure.

Mapping of one rating ``(user, item, rating, t)`` (all at event time ``t``, in this order):

=============  ==========================  ==============================================
event_type     when                        event_id
=============  ==========================  ==============================================
``view``       always                      ``<dataset>:<user>:<item>:view``
``rating``     always, ``value = rating``  ``<dataset>:<user>:<item>:rating``
``click``      ``rating >= 4``             ``<dataset>:<user>:<item>:click``
``dismiss``    ``rating <= 2``             ``<dataset>:<user>:<item>:dismiss``
=============  ==========================  ==============================================

MovieLens holds at most one rating per (user, item), so the ids are unique and the same on every
replay: re-publishing a dataset is a no-op for the features (idempotence by ``event_id``).
Ratings come in the loader's deterministic order ``(timestamp, user, item)``.

Catalogue: one ``CatalogItem`` per movie with ``event_id = <dataset>:item:<item>``, its title and
genres, and ``event_time = created_time =`` the item's first rating time in the dataset (the
dataset's first rating time for never-rated movies), in event-time order.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import orjson
import pandas as pd

CLICK_MIN_RATING = 4.0
DISMISS_MAX_RATING = 2.0


@dataclass(frozen=True, slots=True)
class ReplayMessage:
    """One message to publish: Kafka key, JSON value and its event time (for pacing)."""

    key: bytes
    value: bytes
    event_time_ms: int


def rating_events(
    dataset: str, ratings: pd.DataFrame, limit: int | None = None
) -> Iterator[ReplayMessage]:
    """Events of the first ``limit`` ratings (all when ``None``), in event-time order."""
    frame = ratings if limit is None else ratings.iloc[:limit]
    users = frame["user_id"].tolist()
    items = frame["item_id"].tolist()
    values = frame["rating"].astype(float).tolist()
    times = frame["timestamp_ms"].astype("int64").tolist()
    dumps = orjson.dumps
    for user, item, rating, t in zip(users, items, values, times, strict=True):
        key = user.encode()
        prefix = f"{dataset}:{user}:{item}:"
        base = {"user_id": user, "item_id": item, "event_time": t}
        yield ReplayMessage(
            key, dumps({**base, "event_id": prefix + "view", "event_type": "view"}), t
        )
        yield ReplayMessage(
            key,
            dumps({**base, "event_id": prefix + "rating", "event_type": "rating", "value": rating}),
            t,
        )
        if rating >= CLICK_MIN_RATING:
            yield ReplayMessage(
                key, dumps({**base, "event_id": prefix + "click", "event_type": "click"}), t
            )
        elif rating <= DISMISS_MAX_RATING:
            yield ReplayMessage(
                key, dumps({**base, "event_id": prefix + "dismiss", "event_type": "dismiss"}), t
            )


def rating_event_count(ratings: pd.DataFrame) -> int:
    """How many events ``rating_events`` makes of ``ratings`` (a view and a rating each, plus a
    click or a dismissal where the rating says so), without making them: a progress total."""
    values = ratings["rating"]
    clicks = int((values >= CLICK_MIN_RATING).sum())
    dismissals = int((values <= DISMISS_MAX_RATING).sum())
    return 2 * len(ratings) + clicks + dismissals


def catalog_events(dataset: str, ratings: pd.DataFrame, items: pd.DataFrame) -> list[ReplayMessage]:
    """One catalogue update per movie, created at its first rating, in event-time order."""
    first_seen = ratings.groupby("item_id")["timestamp_ms"].min().to_dict()
    fallback = int(ratings["timestamp_ms"].min()) if len(ratings) else 0
    messages = []
    for item, title, categories in zip(
        items["item_id"].tolist(),
        items["title"].tolist(),
        items["categories"].tolist(),
        strict=True,
    ):
        t = int(first_seen.get(item, fallback))
        body = {
            "event_id": f"{dataset}:item:{item}",
            "item_id": item,
            "title": title,
            "categories": list(categories),
            "event_time": t,
            "created_time": t,
        }
        messages.append(ReplayMessage(item.encode(), orjson.dumps(body), t))
    messages.sort(key=lambda m: (m.event_time_ms, m.key))
    return messages
