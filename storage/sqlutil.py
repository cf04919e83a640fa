"""Small helpers shared by the storage modules: dialect-aware upserts and chunked IN."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

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


def insert(conn: AsyncConnection, target: sa.Table) -> Any:
    """An INSERT that knows ON CONFLICT for the connection's dialect."""
    if conn.dialect.name == "postgresql":
        return pg_insert(target)
    return sqlite_insert(target)


def chunks(values: Iterable[Any], size: int = CHUNK) -> Iterable[list[Any]]:
    batch: list[Any] = []
    for value in values:
        batch.append(value)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


async def select_in(
    conn: AsyncConnection, target: sa.Table, column: sa.Column[Any], values: Iterable[Any],
    *, for_update: bool = False,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for part in chunks(sorted(set(values))):
        query = sa.select(target).where(column.in_(part))
        if for_update and conn.dialect.name == "postgresql":
            query = query.with_for_update()
        rows.extend(dict(r._mapping) for r in (await conn.execute(query)))
    return rows


async def delete_in(
    conn: AsyncConnection, target: sa.Table, column: sa.Column[Any], values: Sequence[Any]
) -> None:
    for part in chunks(sorted(set(values))):
        await conn.execute(sa.delete(target).where(column.in_(part)))
