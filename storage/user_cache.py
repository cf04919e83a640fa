"""The SQLite intake writer's cache of user rows: the rows as its own connection last
committed them, so a group of messages from users seen a moment ago does not read and
decode them again (a user's activity changes with nearly every group).

It is used only while nothing else has written. Each intake transaction starts by reading
SQLite's data_version (it changes when another connection commits) and the connection's
total_changes() (it changes when another transaction on this connection writes, such as
the dispatcher's journal, storage/journal.py). When either differs from what the last
intake commit left, the cache is emptied.

A transaction takes the cached rows out and changes them in place. Only the rows whose
stored values it knows are put back, and only once it has committed (`committed`). A
failed transaction empties the cache (`discard`). A merged-away or erased row is never put
back: it was taken out when its group loaded it, as every row of the ids a group names is.
An erasure also empties the whole cache, as a precaution where a person's data is at stake
(erasures are rare, merges are not). The rows put back are the book's own dicts, so nothing
may change them after save_book has written them. Writer thread only. Schema changes and
the backup API on the writer's own connection would go unseen; npsd does neither there
(migrations run on the engine's connection at start).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from storage.fast_path import Fetch, Steps

# Users kept (most recently written first to stay): a few hundred bytes to a few KB each.
CAPACITY = 20_000

_STATE_SQL = "SELECT total_changes(), data_version FROM pragma_data_version"
_CHANGES_SQL = "SELECT total_changes()"

Row = dict[str, Any]


class UserRowCache:
    def __init__(self, capacity: int | None = None) -> None:
        self.capacity = CAPACITY if capacity is None else capacity
        self._rows: OrderedDict[str, Row] = OrderedDict()
        self._connection: object | None = None
        # (total_changes, data_version) as the last intake commit left them.
        self._state: tuple[int, int] | None = None
        self._version = 0
        self._next_state: tuple[int, int] | None = None
        self._keep: list[Row] = []
        self._forget_all = False

    def __len__(self) -> int:
        return len(self._rows)

    def bind(self, connection: object) -> None:
        """The connection the next transaction runs on: another one knows nothing of these
        rows' history (a failed connection is replaced)."""
        if connection is not self._connection:
            self.discard()
            self._connection = connection

    def begin(self) -> Steps[None]:
        """The transaction's first step: empty the cache if anything else has written."""
        [(changes, version)] = yield Fetch(_STATE_SQL)
        if self._state != (int(changes), int(version)):
            self._rows.clear()
        self._version = int(version)
        self._keep, self._forget_all, self._next_state = [], False, None

    def take(self, ids: Iterable[str]) -> tuple[dict[str, Row], set[str]]:
        """The cached rows of `ids`, removed from the cache, and the ids still to be read."""
        found: dict[str, Row] = {}
        missing: set[str] = set()
        pop = self._rows.pop
        for user_id in ids:
            row = pop(user_id, None)
            if row is None:
                missing.add(user_id)
            else:
                found[user_id] = row
        return found, missing

    def keep(self, rows: Iterable[Row]) -> None:
        """Rows whose every column now holds what this transaction stored."""
        self._keep.extend(rows)

    def forget_all(self) -> None:
        """Empty the cache once this transaction commits (it erased someone)."""
        self._forget_all = True

    def end(self) -> Steps[None]:
        """The transaction's last step before COMMIT: what total_changes() will be."""
        [(changes,)] = yield Fetch(_CHANGES_SQL)
        self._next_state = (int(changes), self._version)

    def committed(self) -> None:
        if self._forget_all or self._next_state is None:
            self.discard()
            return
        rows = self._rows
        for row in self._keep:  # taken out when loaded, so each goes in as the newest
            rows[row["user_id"]] = row
        while len(rows) > self.capacity:
            rows.popitem(last=False)
        self._state, self._keep = self._next_state, []

    def discard(self) -> None:
        self._rows.clear()
        self._state, self._keep = None, []
