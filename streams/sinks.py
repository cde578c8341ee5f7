"""Where the worker's applied events and rows go besides the online store (adapters).

* the **offline event log** and the **feature history** (``features.offline``: parquet);
* the **item transitions** read by retrieval (``retrieval.cooccurrence.RedisTransitionStore``, built
  by ``retrieval.build_retriever.transition_store`` exactly as serving builds it, so both agree on keys);
* **privacy erasure** of a user's offline data.

Delivery guarantees (see ``streams.agents`` for the order of a batch's effects):

* Offline log and feature history are appended *before* the state commit: a crash in between
  re-delivers the batch and appends its events and rows again. That is at-least-once, and safe:
  ``OfflineEventLog.read`` drops re-delivered ``event_id``s, and a repeated feature row is the same
  row at the same event time. (Appending after the commit would lose the batch on such a crash,
  since the re-delivered events are then recognised as duplicates and not applied again.)
* Transition increments are additive, so they are queued into the **same** ``MULTI``/``EXEC`` as the
  user states whose seen-ids make re-deliveries duplicates: exactly once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from core.errors import ConfigError
from core.settings import Settings
from events.models import Interaction
from features.offline import FeatureHistory, OfflineEventLog
from features.rows import ItemFeatureRow, UserFeatureRow
from retrieval.build_retriever import transition_store
from retrieval.cooccurrence import RedisTransitionStore


class _IntoTransaction:
    """A stand-in Redis client whose ``pipeline()`` is an already open transaction.

    ``RedisTransitionStore.apply`` opens a pipeline, queues its commands and executes; handed this
    object, its commands land in the caller's ``MULTI`` and run when the caller executes it.
    """

    def __init__(self, transaction: Any) -> None:
        self._transaction = transaction

    def pipeline(self, transaction: bool = False) -> _IntoTransaction:
        return self

    def execute(self) -> list[Any]:
        return []  # the caller's EXEC runs the queued commands

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transaction, name)


class StreamSinks:
    """Offline log, feature history and transitions of one namespace."""

    def __init__(self, settings: Settings, redis_client: Any) -> None:
        self.event_log = OfflineEventLog(settings)
        self.history = FeatureHistory(settings)
        store = transition_store(settings, redis_client)
        if not isinstance(store, RedisTransitionStore):
            raise ConfigError("the stream worker needs the Redis transition store")
        self.transitions = store

    def log_events(self, events: Sequence[Interaction]) -> None:
        if events:
            self.event_log.append(events)

    def log_rows(self, rows: Sequence[UserFeatureRow | ItemFeatureRow]) -> None:
        if rows:
            self.history.append(rows)

    def erase_user(self, user_id: str) -> None:
        """Privacy deletion of the user's offline data (idempotent)."""
        self.event_log.delete_user(user_id)
        self.history.delete_user(user_id)

    def queue_transitions(
        self, increments: Mapping[tuple[str, str], float]
    ) -> Callable[[Any], None] | None:
        """``commit(also=...)`` callback adding ``increments`` inside the state transaction."""
        if not increments:
            return None
        store = self.transitions

        def queue(transaction: Any) -> None:
            RedisTransitionStore(
                _IntoTransaction(transaction), store.prefix, store.max_neighbours
            ).apply(increments)

        return queue
