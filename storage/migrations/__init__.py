"""Versioned schema. A fresh database is created at the latest version and stamped; an
existing one is upgraded step by step, each step in its own transaction. A database newer
than this npsd is refused (an older binary must not write a schema it does not know)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import SQLModel

from storage import models
from storage.db import Database

Step = Callable[[AsyncConnection], Awaitable[None]]

async def _events_without_user_ids(conn: AsyncConnection) -> None:
    """1 → 2: the intake log keeps what deduplication needs, not who sent it (cheaper to
    write, and nothing personal left behind after a deletion request)."""
    for index in ("ix_events_user_id", "ix_events_anonymous_id"):
        await conn.execute(sa.text(f"DROP INDEX IF EXISTS {index}"))
    for column in ("user_id", "anonymous_id"):
        await conn.execute(sa.text(f"ALTER TABLE events DROP COLUMN {column}"))


# STEPS[n] upgrades version n to n + 1. Append, never edit.
STEPS: dict[int, Step] = {1: _events_without_user_ids}
LATEST = 2
_SCHEMA = models.SchemaVersion.__table__  # type: ignore[attr-defined]
_SYNC = models.SyncState.__table__  # type: ignore[attr-defined]
_PG_LOCK_KEY = 0x6E707364  # "npsd": serialises migrations across processes


class SchemaTooNew(Exception):
    def __init__(self, found: int) -> None:
        super().__init__(
            f"the database schema is version {found}, newer than this npsd knows "
            f"({LATEST}); upgrade npsd instead of downgrading the database"
        )
        self.found = found


async def current_version(db: Database) -> int | None:
    """The schema version, or None for an empty database."""
    async with db.read() as conn:
        has_table = await conn.run_sync(lambda c: sa.inspect(c).has_table("npsd_schema"))
        if not has_table:
            return None
        row = (await conn.execute(sa.select(_SCHEMA.c.version))).first()
        return None if row is None else int(row[0])


async def migrate(db: Database, now: datetime) -> tuple[int | None, int]:
    """Bring the schema to LATEST; returns (version before, version after)."""
    async with db.write() as conn:
        if not db.is_sqlite:
            await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
        has_table = await conn.run_sync(lambda c: sa.inspect(c).has_table("npsd_schema"))
        found: int | None = None
        if has_table:
            row = (await conn.execute(sa.select(_SCHEMA.c.version))).first()
            found = None if row is None else int(row[0])
        if found is not None and found > LATEST:
            raise SchemaTooNew(found)
        if found is None:
            await conn.run_sync(SQLModel.metadata.create_all)
            await conn.execute(sa.delete(_SCHEMA))
            await conn.execute(sa.insert(_SCHEMA).values(id=1, version=LATEST, migrated_at=now))
            await conn.execute(sa.insert(_SYNC).values(id=1))
            return None, LATEST
    version = found
    while version < LATEST:
        async with db.write() as conn:
            await STEPS[version](conn)
            version += 1
            await conn.execute(sa.update(_SCHEMA).values(version=version, migrated_at=now))
    return found, LATEST
