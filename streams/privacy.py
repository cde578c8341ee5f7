"""Privacy requests (``opt_out``, ``opt_in``, ``delete``) as a small per-user register. Pure.

The worker keeps one :class:`PrivacyStatus` per user that ever sent a request, under a key
derived from a hash of the user id (:func:`subject_hash`), so that the marker that keeps a
deleted user deleted does not itself hold the user id. Semantics (also in ``features/FEATURES.md``):

* **opt_out / opt_in** — a switch. The request with the greatest ``(event_time, event_id)`` wins,
  so duplicates and reordered requests end in the same status. While a user is opted out, every
  event of theirs that the worker processes is *suppressed*: not applied to features, not
  forwarded to item features, not logged offline, not counted in item transitions. Their online
  user row is deleted when the opt-out is processed (and again on every re-delivery: idempotent).
  It is a processing-time switch, not an event-time one: a consent decision takes effect when it
  is processed and is never applied retroactively to events already processed.
* **delete** — erase what the worker holds about the user, and suppress for good every event of
  theirs with ``event_time <= `` the greatest delete request's event time (``deleted_through_ms``):
  events still in flight, re-deliveries and replays of old data never bring them back. Events
  after that time are new data and start a fresh user state.

Within one worker batch, privacy requests take effect before the batch's events.
"""

from __future__ import annotations

import hashlib
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson

from events.models import PrivacyAction, PrivacyRequest

if TYPE_CHECKING:
    from streams.handlers import Decoded


@dataclass(slots=True)
class PrivacyStatus:
    opted_out: bool = False
    decided_by: tuple[int, str] | None = None  # order key of the opt request in force
    deleted_through_ms: int | None = None


@dataclass(slots=True)
class PrivacyEffects:
    """What one batch of privacy requests asks the stores to do (all idempotent)."""

    delete: set[str] = field(default_factory=set)  # erase every store's data of these users
    hide: set[str] = field(default_factory=set)  # delete the online row (opt-out, every delivery)
    touched: set[str] = field(default_factory=set)  # statuses that changed
    applied: int = 0
    duplicates: int = 0


def subject_hash(namespace: str, user_id: str) -> str:
    """Stable pseudonymous id of a user for the privacy marker's key (no user id in Redis)."""
    return hashlib.sha256(f"{namespace}\x00{user_id}".encode()).hexdigest()[:40]


def apply_request(status: PrivacyStatus, request: PrivacyRequest) -> tuple[PrivacyStatus, bool]:
    """Fold one request into the status (in place); ``changed`` is False when it changed nothing."""
    t = request.event_time_ms
    if request.action is PrivacyAction.DELETE:
        if status.deleted_through_ms is not None and t <= status.deleted_through_ms:
            return status, False
        status.deleted_through_ms = t
        return status, True
    key = (t, request.event_id)
    if status.decided_by is not None and key <= status.decided_by:
        return status, False
    status.decided_by = key
    status.opted_out = request.action is PrivacyAction.OPT_OUT
    return status, True


def suppresses(status: PrivacyStatus | None, event_time_ms: int) -> bool:
    """True if an event of this user at ``event_time_ms`` must not be processed at all."""
    if status is None:
        return False
    if status.opted_out:
        return True
    return status.deleted_through_ms is not None and event_time_ms <= status.deleted_through_ms


def handle_privacy(
    batch: Sequence[Decoded[PrivacyRequest]], statuses: MutableMapping[str, PrivacyStatus]
) -> PrivacyEffects:
    """Apply a batch of requests to ``statuses`` (keyed by user id, updated in place)."""
    effects = PrivacyEffects()
    for decoded in batch:
        request = decoded.event
        user = request.user_id
        status = statuses.setdefault(user, PrivacyStatus())
        _, changed = apply_request(status, request)
        if not changed:
            # A stored marker is committed only after its erasure completed (``streams.agents``),
            # so a request it already covers needs none again: fresh data of the user, after
            # the deletion time, is not erased by a re-delivered old request.
            effects.duplicates += 1
            continue
        effects.applied += 1
        effects.touched.add(user)
        if request.action is PrivacyAction.DELETE:
            effects.delete.add(user)
    effects.hide = {u for u in statuses if statuses[u].opted_out} & {
        d.event.user_id for d in batch if d.event.action is PrivacyAction.OPT_OUT
    }
    return effects


def encode_status(status: PrivacyStatus) -> bytes:
    return orjson.dumps(
        {
            "o": status.opted_out,
            "k": list(status.decided_by) if status.decided_by else None,
            "d": status.deleted_through_ms,
        }
    )


def decode_status(raw: bytes) -> PrivacyStatus:
    body = orjson.loads(raw)
    key = body["k"]
    return PrivacyStatus(
        opted_out=body["o"],
        decided_by=(key[0], key[1]) if key else None,
        deleted_through_ms=body["d"],
    )
