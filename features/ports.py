"""The online feature store interface, and an in-memory implementation for unit tests.

Writers: the stream processors. Readers: the serving pipeline. Any implementation must keep the
event-time rule: a row never replaces a stored row with a larger ``event_time_ms``.
The same contract test runs against ``InMemoryFeatureStore`` and the Feast/Redis adapter.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from features.rows import ItemFeatureRow, UserFeatureRow


class OnlineFeatureWriter(Protocol):
    def write_users(self, rows: Sequence[UserFeatureRow]) -> None: ...

    def write_items(self, rows: Sequence[ItemFeatureRow]) -> None: ...

    def delete_users(self, user_ids: Iterable[str]) -> None: ...


class OnlineFeatureReader(Protocol):
    def read_users(self, user_ids: Sequence[str]) -> dict[str, UserFeatureRow]: ...

    def read_items(self, item_ids: Sequence[str]) -> dict[str, ItemFeatureRow]: ...


class InMemoryFeatureStore:
    """A dict-backed store with the same newer-wins semantics as the real one."""

    def __init__(self) -> None:
        self._users: dict[str, UserFeatureRow] = {}
        self._items: dict[str, ItemFeatureRow] = {}

    def write_users(self, rows: Sequence[UserFeatureRow]) -> None:
        for row in rows:
            current = self._users.get(row.user_id)
            if current is None or row.event_time_ms >= current.event_time_ms:
                self._users[row.user_id] = row

    def write_items(self, rows: Sequence[ItemFeatureRow]) -> None:
        for row in rows:
            current = self._items.get(row.item_id)
            if current is None or row.event_time_ms >= current.event_time_ms:
                self._items[row.item_id] = row

    def delete_users(self, user_ids: Iterable[str]) -> None:
        for user_id in user_ids:
            self._users.pop(user_id, None)

    def read_users(self, user_ids: Sequence[str]) -> dict[str, UserFeatureRow]:
        return {u: self._users[u] for u in user_ids if u in self._users}

    def read_items(self, item_ids: Sequence[str]) -> dict[str, ItemFeatureRow]:
        return {i: self._items[i] for i in item_ids if i in self._items}
