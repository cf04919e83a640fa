"""The tables as SQLAlchemy Core objects, and chunking for IN lists."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from storage import models

CHUNK = 2000  # well under SQLite's and asyncpg's bound-parameter limits


def table(model: Any) -> sa.Table:
    return model.__table__  # type: ignore[no-any-return]


EVENTS = table(models.Event)
USERS = table(models.User)
ALIASES = table(models.Alias)
ACCOUNTS = table(models.Account)
MEMBERSHIPS = table(models.Membership)
SUPPRESSIONS = table(models.Suppression)
SURVEYS = table(models.Survey)
DECISIONS = table(models.Decision)
SYNC_STATE = table(models.SyncState)
SYNC_FAILURES = table(models.SyncFailure)
DAYS = table(models.NpsDay)
ACCOUNT_TOTALS = table(models.NpsAccount)
DELIVERIES = table(models.Delivery)


def chunks(values: Iterable[Any], size: int = CHUNK) -> Iterable[list[Any]]:
    if isinstance(values, list):  # the usual case (a sorted list): slices, not appends
        for start in range(0, len(values), size):
            yield values[start:start + size]
        return
    batch: list[Any] = []
    for value in values:
        batch.append(value)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
