"""Versioned schema. A fresh database is created at the latest version and stamped; an
existing one is upgraded step by step, each step in its own transaction. A database newer
than this npsd is refused (an older binary must not write a schema it does not know)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import SQLModel

from storage import models, nps_totals
from storage.console_schema import CONSOLE_INDEXES, LAST_NAME_INDEX
from storage.db import Database
from storage.dialect import dialect_for
from storage.fast_path import Values, run_async
from storage.import_schema import IMPORT_INDEXES

Step = Callable[[AsyncConnection], Awaitable[None]]

async def _events_without_user_ids(conn: AsyncConnection) -> None:
    """1 → 2: the intake log keeps what deduplication needs, not who sent it (cheaper to
    write, and nothing personal left behind after a deletion request)."""
    for index in ("ix_events_user_id", "ix_events_anonymous_id"):
        await conn.execute(sa.text(f"DROP INDEX IF EXISTS {index}"))
    for column in ("user_id", "anonymous_id"):
        await conn.execute(sa.text(f"ALTER TABLE events DROP COLUMN {column}"))


async def _surveys_by_address(conn: AsyncConnection) -> None:
    """2 → 3: surveys remember the (normalised) address they went to, indexed, for the one
    survey per address rule; and on SQLite their ids are never reused (AUTOINCREMENT), since
    erasure now deletes survey rows. SQLite cannot add AUTOINCREMENT to a table: it is
    rebuilt, rows copied with their ids."""
    surveys = models.Survey.__table__  # type: ignore[attr-defined]
    if conn.dialect.name != "sqlite":
        await conn.execute(sa.text(
            "ALTER TABLE surveys ADD COLUMN IF NOT EXISTS email_key VARCHAR"))
        await conn.execute(sa.text(
            "CREATE INDEX IF NOT EXISTS ix_surveys_email_key ON surveys (email_key)"))
        return
    old = [r[1] for r in (await conn.execute(sa.text("PRAGMA table_info(surveys)"))).all()]
    await conn.execute(sa.text("ALTER TABLE surveys RENAME TO surveys_v2"))
    for index in [r[1] for r in (await conn.execute(sa.text(
            "PRAGMA index_list(surveys_v2)"))).all() if not str(r[1]).startswith("sqlite_")]:
        await conn.execute(sa.text(f"DROP INDEX {index}"))
    await conn.run_sync(lambda c: surveys.create(c))
    listed = ", ".join(old)
    await conn.execute(sa.text(f"INSERT INTO surveys ({listed}) SELECT {listed} FROM surveys_v2"))
    await conn.execute(sa.text("DROP TABLE surveys_v2"))


async def _console(conn: AsyncConnection) -> None:
    """3 → 4: the console's sessions table and the indexes its pages read through."""
    sessions = models.ConsoleSession.__table__  # type: ignore[attr-defined]
    await conn.run_sync(lambda c: sessions.create(c, checkfirst=True))
    for index in CONSOLE_INDEXES:
        await conn.run_sync(_create_index, index)


async def _imports(conn: AsyncConnection) -> None:
    """4 → 5: imported answers carry their identity (surveys.import_key, unique), users are
    found by address through an index, and erased people's address keys are kept
    (suppressed_addresses) so an import cannot bring them back."""
    # Step 2 → 3 rebuilds surveys on SQLite from today's model, which has the column.
    if conn.dialect.name != "sqlite":
        await conn.execute(sa.text(
            "ALTER TABLE surveys ADD COLUMN IF NOT EXISTS import_key VARCHAR"))
    elif "import_key" not in [r[1] for r in (await conn.execute(
            sa.text("PRAGMA table_info(surveys)"))).all()]:
        await conn.execute(sa.text("ALTER TABLE surveys ADD COLUMN import_key VARCHAR"))
    kept = models.SuppressedAddress.__table__  # type: ignore[attr-defined]
    await conn.run_sync(lambda c: kept.create(c, checkfirst=True))
    for index in IMPORT_INDEXES:
        # IF NOT EXISTS, not checkfirst: SQLAlchemy cannot reflect an expression index on
        # SQLite (it warns), and checkfirst reflects the table's indexes.
        await conn.run_sync(_create_if_missing, index)


def _create_if_missing(sync_conn: sa.Connection, index: sa.Index) -> None:
    if not _has_index(sync_conn, index):
        index.create(sync_conn, checkfirst=False)


def _has_index(sync_conn: sa.Connection, index: sa.Index) -> bool:
    if sync_conn.dialect.name == "sqlite":
        found = sync_conn.execute(sa.text(
            "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = :n"),
            {"n": index.name}).first()
    else:
        found = sync_conn.execute(sa.text("SELECT 1 FROM pg_indexes WHERE indexname = :n"),
                                  {"n": index.name}).first()
    return found is not None


def _create_table(sync_conn: sa.Connection, table: sa.Table) -> None:
    table.create(sync_conn, checkfirst=True)


async def _deliveries(conn: AsyncConnection) -> None:
    """6 → 7: the outbox of alerts and webhooks (storage/deliveries.py)."""
    deliveries = models.Delivery.__table__  # type: ignore[attr-defined]
    await conn.run_sync(lambda c: deliveries.create(c, checkfirst=True))


def _create_index(sync_conn: sa.Connection, index: sa.Index) -> None:
    index.create(sync_conn, checkfirst=True)


async def _nps_totals(conn: AsyncConnection) -> None:
    """5 → 6: running NPS totals per day and per account, built from the answers there are
    (storage/nps_totals.py keeps them from then on)."""
    for model in (models.NpsDay, models.NpsAccount):
        table = model.__table__  # type: ignore[union-attr]
        await conn.run_sync(_create_table, table)
    dialect = dialect_for(conn.engine.url.render_as_string(hide_password=False))
    await run_async(nps_totals.rebuild(Values(dialect)), conn)


async def _sharded_days(conn: AsyncConnection) -> None:
    """7 → 8: the day totals get a shard in their key (models.NpsDay), so concurrent
    writers add to rows of their own. A few hundred rows (one per day): read, table made
    anew, rows put back as shard 0."""
    rows = (await conn.execute(sa.text(
        "SELECT day, promoters, passives, detractors, sent FROM nps_days"))).all()
    await conn.execute(sa.text("DROP TABLE nps_days"))
    table = models.NpsDay.__table__  # type: ignore[attr-defined]
    await conn.run_sync(_create_table, table)
    if rows:
        await conn.execute(sa.insert(table), [
            {"day": r[0], "shard": 0, "promoters": r[1], "passives": r[2], "detractors": r[3],
             "sent": r[4]} for r in rows])


async def _last_name_search(conn: AsyncConnection) -> None:
    """8 → 9: customer search finds a surname (the lastName trait) too."""
    await conn.run_sync(_create_index, LAST_NAME_INDEX)


# STEPS[n] upgrades version n to n + 1. Append, never edit.
STEPS: dict[int, Step] = {1: _events_without_user_ids, 2: _surveys_by_address, 3: _console,
                          4: _imports, 5: _nps_totals, 6: _deliveries, 7: _sharded_days,
                          8: _last_name_search}
LATEST = 9
_SCHEMA = models.SchemaVersion.__table__  # type: ignore[attr-defined]
_SYNC = models.SyncState.__table__  # type: ignore[attr-defined]
_LOCK_KEY = 0x6E707364  # "npsd": serialises migrations across processes


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
        await db.dialect.exclusive(conn, _LOCK_KEY)
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
