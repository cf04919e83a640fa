"""Schema 5 (the import) on both backends: a fresh database has surveys.import_key (unique),
suppressed_addresses and the address index; a schema-4 database is upgraded to them with
its surveys kept, and an erasure then keeps the person's address key."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

from storage.db import Database
from storage.import_schema import IMPORT_INDEXES
from storage.migrations import LATEST, migrate
from storage.survey_plan import email_key

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


async def _schema(db: Database) -> tuple[set[str], set[str], set[str]]:
    # Index names from the catalogue: SQLAlchemy does not reflect SQLite expression indexes.
    listing = ("SELECT name FROM sqlite_master WHERE type = 'index'" if db.dialect.name == "sqlite"
               else "SELECT indexname FROM pg_indexes")
    async with db.read() as conn:
        columns, tables = await conn.run_sync(lambda c: (
            {col["name"] for col in sa.inspect(c).get_columns("surveys")},
            set(sa.inspect(c).get_table_names())))
        indexes = {str(r[0]) for r in await conn.execute(sa.text(listing))}
    return columns, indexes, tables


async def test_fresh_and_upgraded_databases_have_the_import_schema(db_url: str) -> None:
    assert LATEST >= 5
    db = Database(db_url)
    wanted = {ix.name for ix in IMPORT_INDEXES}
    try:
        await migrate(db, NOW)
        columns, indexes, tables = await _schema(db)
        assert "import_key" in columns and wanted <= indexes and "suppressed_addresses" in tables
        async with db.write() as conn:  # back to schema 4, with a survey in it
            for index in IMPORT_INDEXES:
                await conn.execute(sa.text(f"DROP INDEX {index.name}"))
            await conn.execute(sa.text("DROP TABLE suppressed_addresses"))
            await conn.execute(sa.text("ALTER TABLE surveys DROP COLUMN import_key"))
            await conn.execute(sa.text(
                "INSERT INTO surveys (user_id, token, kind, state, due_at, created_at, attempts, "
                "answer_revision, synced_revision, needs_sync) VALUES ('u1', 't1', 'survey', "
                "'pending', :at, :at, 0, 0, 0, :f)"), {"at": NOW, "f": False})
            await conn.execute(sa.text("UPDATE npsd_schema SET version = 4"))
        assert await migrate(db, NOW) == (4, LATEST)
        columns, indexes, tables = await _schema(db)
        assert "import_key" in columns and wanted <= indexes and "suppressed_addresses" in tables
        async with db.read() as conn:
            assert (await conn.execute(sa.text("SELECT token FROM surveys"))).scalar_one() == "t1"
        assert email_key(" Ann@Example.com") == email_key("ann@example.com")
    finally:
        await db.close()
