"""Training data from the system's own offline event log (``aether train --from-log``).

The worker appends every interaction it accepts to the offline log (``features.offline``:
validated, de-duplicated by ``event_id`` on read, ordered by event time); rejected, late and
dead-lettered events never reach it. So the ranker is trained on exactly the events the online
features were computed from, point-in-time: ``before_ms`` keeps only events with an event time
before it (docs/architecture.md, event-time rule 5), and the splits cut by event time, never by arrival.

Events → the trainer's interactions (``user_id``, ``item_id``, ``rating``, ``timestamp_ms``, one
row per (user, item), as a dataset loader gives them): a pair's time is its first interaction
other than a dismissal (a dismissal is negative feedback, not something the user consumed); its
``rating`` is the value of its latest ``rating`` event, else NaN. A MovieLens replay therefore
comes back as the dataset's own ratings (``interactions.replay``), and the same split and the
same evaluation as ``aether train --dataset`` apply (``ranker.fit``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.errors import NotFoundError
from core.settings import Deployment
from features.offline import OfflineEventLog
from interactions.dismissals import with_dismissals
from interactions.sequences import Split, filter_rare_items, split_of_kind

COLUMNS = ["user_id", "item_id", "rating", "timestamp_ms"]


def log_dataset_name(deployment: Deployment) -> str:
    """What a checkpoint trained from the log records as its dataset."""
    return f"log:{deployment.namespace}"


def interactions_from_events(events: pd.DataFrame) -> pd.DataFrame:
    """The log's events (``OfflineEventLog.read``) as the trainer's interactions (module
    docstring), ordered by (time, user, item) as the dataset loaders order ratings."""
    if events.empty:
        return pd.DataFrame(
            {
                c: pd.Series(dtype=t)
                for c, t in zip(COLUMNS, ("str", "str", "float32", "int64"), strict=True)
            }
        )
    consumed = events[events["event_type"] != "dismiss"]
    first = consumed.groupby(["user_id", "item_id"], sort=False)["event_time_ms"].min()
    ratings = events[events["event_type"] == "rating"].dropna(subset=["value"])
    latest = (
        ratings.sort_values(["event_time_ms", "event_id"])
        .groupby(["user_id", "item_id"], sort=False)["value"]
        .last()
    )
    frame = first.rename("timestamp_ms").reset_index()
    frame["rating"] = latest.reindex(
        pd.MultiIndex.from_frame(frame[["user_id", "item_id"]])
    ).to_numpy(dtype=np.float32, na_value=np.nan)
    frame = frame.astype({"user_id": str, "item_id": str, "timestamp_ms": "int64"})
    frame = frame.sort_values(["timestamp_ms", "user_id", "item_id"], kind="stable")
    return frame[COLUMNS].reset_index(drop=True)


def log_interactions(deployment: Deployment, before_ms: int | None = None) -> pd.DataFrame:
    """The interactions in the deployment's offline log with event time < ``before_ms``."""
    events = OfflineEventLog(deployment).read(before_ms=before_ms)
    if events.empty:
        raise NotFoundError(
            f"the offline event log of namespace {deployment.namespace!r} has no events"
            + (f" before {before_ms}" if before_ms is not None else "")
            + ": run `aether worker` over some events first"
        )
    return interactions_from_events(events)


def log_split(
    deployment: Deployment,
    kind: str,
    temporal_requests: str = "every",
    *,
    before_ms: int | None = None,
    dismissals: bool = False,
) -> Split:
    """The ``kind`` split of the log's interactions, rare items filtered: what ``aether train
    --from-log`` fits on, built as ``interactions.movielens.load_split`` builds a dataset's."""
    ratings = filter_rare_items(log_interactions(deployment, before_ms))
    split = split_of_kind(ratings, kind, temporal_requests)
    return with_dismissals(split, ratings) if dismissals else split
