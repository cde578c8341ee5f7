"""Per-user, event-time-ordered sequences and the two offline splits built from them.

Everything here is a pure function of a ratings frame in the ``interactions.movielens`` contract
(``user_id``, ``item_id``, ``timestamp_ms``; one deterministic order). Two protocols:

* **Leave-one-out** (the SASRec/BERT4Rec literature protocol): each user's last item is the test
  target, the second-to-last the validation target, the rest is training input.
* **Global temporal split**: one cut-off time ``T`` for everybody. Models see events with
  ``timestamp < T`` only. The requests (``TEMPORAL_REQUESTS``): ``"every"`` event at/after ``T``
  is one request, with the user's history up to that event (point in time: what serving would
  know then; the model stays as fitted before ``T``), or only each user's ``"first"`` item at/after
  ``T`` with the history before ``T``. A validation cut-off ``T_val < T`` is carved from the
  training period the same way.

Ties in event time are broken by ``item_id`` (as the loader sorts), so every run sees one order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from core.errors import SchemaError

SORT_KEYS = ["user_id", "timestamp_ms", "item_id"]


def filter_rare_items(ratings: pd.DataFrame, min_count: int = 5) -> pd.DataFrame:
    """Drop items with fewer than ``min_count`` interactions (one pass, the literature recipe).

    On ML-1M this leaves 6,040 users and 3,416 items (999,611 interactions).
    """
    counts = ratings["item_id"].value_counts()
    keep = counts.index[counts >= min_count]
    return ratings[ratings["item_id"].isin(keep)].reset_index(drop=True)


def user_sequences(ratings: pd.DataFrame) -> dict[str, list[str]]:
    """Each user's items, oldest first; ties in time broken by ``item_id``."""
    ordered = ratings.sort_values(SORT_KEYS, kind="stable")
    return {
        str(user): list(group) for user, group in ordered.groupby("user_id", sort=True)["item_id"]
    }


@dataclass(frozen=True)
class EvalCase:
    """One ranking request: given ``history`` (oldest first), rank all items; ``target`` is truth."""

    user_id: str
    history: tuple[str, ...]
    target: str


@dataclass(frozen=True)
class Split:
    """Training sequences plus validation and test requests of one protocol."""

    name: str
    train: Mapping[str, list[str]]  # user -> training sequence (input to the model's fit)
    validation: list[EvalCase]
    test: list[EvalCase]
    items: tuple[str, ...]  # the catalogue ranked against, sorted
    cutoff_ms: int | None = None  # temporal split only: T
    validation_cutoff_ms: int | None = None  # temporal split only: T_val
    temporal_requests: str | None = None  # temporal split only: "every" or "first"
    # per user: (training items before it, dismissed item), when dismissals are used in training
    # (``interactions.dismissals``); the dismissed items are then not in ``train``
    train_dismissals: Mapping[str, tuple[tuple[int, str], ...]] = field(default_factory=dict)


def leave_one_out(ratings: pd.DataFrame, min_length: int = 3) -> Split:
    """Last item = test, second-to-last = validation, the rest = training.

    Users with fewer than ``min_length`` events keep everything for training (none on ML-1M).
    The test request's history includes the validation item, as in the literature.
    """
    sequences = user_sequences(ratings)
    train: dict[str, list[str]] = {}
    validation: list[EvalCase] = []
    test: list[EvalCase] = []
    for user, seq in sequences.items():
        if len(seq) < min_length:
            train[user] = seq
            continue
        train[user] = seq[:-2]
        validation.append(EvalCase(user, tuple(seq[:-2]), seq[-2]))
        test.append(EvalCase(user, tuple(seq[:-1]), seq[-1]))
    items = tuple(sorted(ratings["item_id"].unique()))
    return Split("leave-one-out", train, validation, test, items)


def quantile_cutoff(timestamps_ms: pd.Series | np.ndarray, quantile: float) -> int:
    """The time at ``quantile`` of the event times (events strictly before it are 'past')."""
    if not 0.0 < quantile < 1.0:
        raise SchemaError(f"quantile must be in (0, 1), got {quantile}")
    return int(np.quantile(np.asarray(timestamps_ms, dtype=np.int64), quantile, method="higher"))


TEMPORAL_REQUESTS = ("every", "first")


def _next_item_requests(
    ratings: pd.DataFrame, start_ms: int, requests: str = "every"
) -> list[EvalCase]:
    """Requests for the events at/after ``start_ms`` (``ratings`` ends where the window ends).

    ``"every"``: one request per event, history = the user's items before it (in the one
    deterministic order). ``"first"``: one request per user, history = items before
    ``start_ms``, target = their first item at/after it. Items already in the history are
    skipped as targets (re-consumption is not what a next-item ranker with seen-filtering
    predicts)."""
    if requests not in TEMPORAL_REQUESTS:
        raise SchemaError(
            f"unknown temporal requests {requests!r}; choose from {TEMPORAL_REQUESTS}"
        )
    ordered = ratings.sort_values(SORT_KEYS, kind="stable")
    cases: list[EvalCase] = []
    for user, group in ordered.groupby("user_id", sort=True):
        times = group["timestamp_ms"].to_numpy()
        items = [str(i) for i in group["item_id"].to_numpy()]
        start = int(np.searchsorted(times, start_ms, side="left"))  # first event at/after
        seen = set(items[:start])
        for position in range(start, len(items)):
            target = items[position]
            if target in seen:
                continue
            if requests == "first":
                cases.append(EvalCase(str(user), tuple(items[:start]), target))
                break
            cases.append(EvalCase(str(user), tuple(items[:position]), target))
            seen.add(target)
    return cases


def _sample(cases: list[EvalCase], limit: int | None, seed: int) -> list[EvalCase]:
    """At most ``limit`` of ``cases``, drawn without replacement, in their original order."""
    if limit is None or len(cases) <= limit:
        return cases
    keep = np.sort(np.random.default_rng(seed).choice(len(cases), size=limit, replace=False))
    return [cases[i] for i in keep]


def temporal_split(
    ratings: pd.DataFrame,
    quantile: float = 0.9,
    validation_quantile: float = 0.9,
    requests: str = "every",
    max_validation_requests: int | None = 10_000,
    seed: int = 0,
) -> Split:
    """Global time split: ``T`` at ``quantile`` of all event times, ``T_val`` at
    ``validation_quantile`` of the event times before ``T``.

    * train sequences: events before ``T_val`` (what a model is fitted on),
    * validation: requests for the events in ``[T_val, T)`` (at most
      ``max_validation_requests`` of them, a seeded sample: model selection needs no more),
    * test: requests for the events at/after ``T`` (all of them),

    with ``requests`` = ``"every"`` event (history up to it) or each user's ``"first"`` item
    (history before the window).
    """
    cutoff = quantile_cutoff(ratings["timestamp_ms"], quantile)
    before = ratings[ratings["timestamp_ms"] < cutoff]
    if before.empty:
        raise SchemaError("temporal split: no events before the cut-off (too few distinct times)")
    validation_cutoff = quantile_cutoff(before["timestamp_ms"], validation_quantile)
    train_events = before[before["timestamp_ms"] < validation_cutoff]
    return Split(
        name="temporal",
        train=user_sequences(train_events),
        validation=_sample(
            _next_item_requests(before, validation_cutoff, requests),
            max_validation_requests,
            seed,
        ),
        test=_next_item_requests(ratings, cutoff, requests),
        items=tuple(sorted(ratings["item_id"].unique())),
        cutoff_ms=cutoff,
        validation_cutoff_ms=validation_cutoff,
        temporal_requests=requests,
    )


def temporal_refit_split(ratings: pd.DataFrame, temporal: Split) -> Split:
    """The temporal split with every event before ``T`` as training data and no validation.

    Once the number of epochs is chosen on validation (a ``temporal`` run), the ranker is re-fitted
    on everything before ``T``, as the baselines are for the test; the test requests are the same.
    """
    if temporal.cutoff_ms is None:
        raise SchemaError("temporal_refit_split needs a temporal split")
    return Split(
        name="temporal-refit",
        train=user_sequences(events_before(ratings, temporal.cutoff_ms)),
        validation=[],
        test=temporal.test,
        items=temporal.items,
        cutoff_ms=temporal.cutoff_ms,
        validation_cutoff_ms=temporal.validation_cutoff_ms,
        temporal_requests=temporal.temporal_requests,
    )


# The kinds of split a ranker is fitted on (``aether train --split``) -> the ``Split.name`` each
# builds, which a checkpoint records.
SPLIT_KINDS = {"loo": "leave-one-out", "temporal": "temporal", "temporal-refit": "temporal-refit"}


def split_of_kind(ratings: pd.DataFrame, kind: str, temporal_requests: str = "every") -> Split:
    """The ``kind`` split of ``ratings`` (one of ``SPLIT_KINDS``); ``temporal_requests`` is
    used by the temporal kinds only."""
    if kind == "loo":
        return leave_one_out(ratings)
    if kind not in SPLIT_KINDS:
        raise SchemaError(f"unknown split {kind!r}; choose one of {', '.join(SPLIT_KINDS)}")
    temporal = temporal_split(ratings, requests=temporal_requests)
    return temporal_refit_split(ratings, temporal) if kind == "temporal-refit" else temporal


def events_before(ratings: pd.DataFrame, cutoff_ms: int) -> pd.DataFrame:
    """Point-in-time view: only events with ``timestamp_ms < cutoff_ms``."""
    return ratings[ratings["timestamp_ms"] < cutoff_ms]
