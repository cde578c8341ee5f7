"""Where the worker's applied events and rows go besides the online store (adapters).

* the **offline event log** and the **feature history** (``features.offline``: parquet), and
  the **offline impression log** (``features.offline_impressions``);
* **privacy erasure** of a user's offline data.

(Item transitions are not a sink: they are exactly-once with the user states, so they ride on the
state store's commit, ``streams.state_port.StateCommit.transitions``.)

Delivery guarantees (see ``streams.agents`` for the order of a batch's effects): offline log and
feature history are appended *before* the state commit, so a crash in between re-delivers the
batch and appends its events and rows again. That is at-least-once, and safe:
``OfflineEventLog.read`` drops re-delivered ``event_id``s, ``OfflineImpressionLog.read``
re-delivered ``request_id``s, and a repeated feature row is the same row at the same event
time. (Appending after the commit would lose the batch on such a crash,
since the re-delivered batch is then skipped by its committed offsets,
``streams.state_port.unconsumed_records``.) Not yet done: naming each file by its batch's source
offsets so that the repeated append replaces the earlier file instead of adding one (issue 21).

Each append writes one parquet file and then takes one size-tiered compaction step
(``features.batch_folder``): a quiet worker's many tiny batch files are merged as they come, at
most one merge per append, and a crash at any step of a merge leaves every row readable exactly
once. Erasure takes the folder's lock, so a merge never brings erased rows back.
"""

from __future__ import annotations

from collections.abc import Sequence

from events.models import Impression, Interaction
from features.offline import FeatureHistory, OfflineEventLog
from features.offline_impressions import OfflineImpressionLog
from features.rows import ItemFeatureRow, UserFeatureRow
from streams.worker_metrics import stage_cpu


class StreamSinks:
    """Offline logs and feature history of one namespace (built by ``streams.build_worker``)."""

    def __init__(
        self,
        event_log: OfflineEventLog,
        history: FeatureHistory,
        impressions: OfflineImpressionLog | None = None,
    ) -> None:
        """``impressions``: None keeps no slates offline."""
        self.event_log = event_log
        self.history = history
        self.impressions = impressions

    # Each append counts its CPU as the ``offline_sinks`` stage (``streams.worker_metrics``).
    def log_events(self, events: Sequence[Interaction]) -> None:
        if events:
            with stage_cpu("offline_sinks"):
                self.event_log.append(events)

    def log_impressions(self, slates: Sequence[Impression]) -> None:
        if slates and self.impressions is not None:
            with stage_cpu("offline_sinks"):
                self.impressions.append(slates)

    def log_rows(self, rows: Sequence[UserFeatureRow | ItemFeatureRow]) -> None:
        if rows:
            with stage_cpu("offline_sinks"):
                self.history.append(rows)

    def erase_user(self, user_id: str) -> None:
        """Privacy deletion of the user's offline data (idempotent)."""
        self.event_log.delete_user(user_id)
        self.history.delete_user(user_id)
        if self.impressions is not None:
            self.impressions.delete_user(user_id)
