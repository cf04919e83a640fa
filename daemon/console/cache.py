"""Figures the console recomputes at most once per FRESH per store: the dashboard (two
grouped scans of every answer and send) and the accounts list (every membership and
answer) cost a few hundred milliseconds to a second with a million users on SQLite, and a
minute-old NPS is as good as a live one. Pages say when their figures were computed; the
other pages read live."""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from storage.db import Database

FRESH = timedelta(seconds=60)
_entries: weakref.WeakKeyDictionary[Database, dict[str, tuple[datetime, Any]]] = \
    weakref.WeakKeyDictionary()


async def cached(db: Database, key: str, now: datetime,
                 compute: Callable[[], Awaitable[Any]]) -> tuple[datetime, Any]:
    """(when computed, value): the stored value while younger than FRESH, else computed."""
    store = _entries.setdefault(db, {})
    found = store.get(key)
    if found is None or now - found[0] >= FRESH or now < found[0]:
        found = (now, await compute())
        store[key] = found
    return found


def clear() -> None:
    """Forget every stored figure (the benchmark measures the cold cost with it)."""
    _entries.clear()
