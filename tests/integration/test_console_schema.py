"""Schema 4 (the console) on both backends: a fresh database has the sessions table and the
console's indexes; a schema-3 database is upgraded to them, its rows kept."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

from storage.console_schema import CONSOLE_INDEXES, LAST_NAME_INDEX
from storage.db import Database
from storage.migrations import LATEST, migrate
from storage.sqlutil import USERS

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
WANTED = {"surveys": {"ix_surveys_answered", "ix_surveys_kind_answered_score",
                      "ix_surveys_kind_sent"},
          "decisions": {"ix_decisions_outcome_at"},
          "users": {"ix_users_email", "ix_users_name", "ix_users_last_name"},
          "memberships": {"ix_memberships_group_active"}}


async def _indexes(db: Database) -> dict[str, set[str]]:
    async with db.read() as conn:
        return await conn.run_sync(lambda c: {
            t: {ix["name"] for ix in sa.inspect(c).get_indexes(t)} for t in WANTED}
            | {"tables": set(sa.inspect(c).get_table_names())})


async def test_fresh_and_upgraded_databases_have_the_console_schema(db_url: str) -> None:
    assert LATEST >= 4 and len(CONSOLE_INDEXES) == 7
    db = Database(db_url)
    try:
        await migrate(db, NOW)
        found = await _indexes(db)
        assert "console_sessions" in found["tables"]
        assert all(WANTED[t] <= found[t] for t in WANTED)
        async with db.write() as conn:  # back to schema 3, with a user in the book
            for index in (*CONSOLE_INDEXES, LAST_NAME_INDEX):
                await conn.execute(sa.text(f"DROP INDEX {index.name}"))
            await conn.execute(sa.text("DROP TABLE console_sessions"))
            await conn.execute(sa.insert(USERS).values(user_id="kept", updated_at=NOW))
            await conn.execute(sa.text("UPDATE npsd_schema SET version = 3"))
        assert await migrate(db, NOW) == (3, LATEST)
        found = await _indexes(db)
        assert "console_sessions" in found["tables"]
        assert all(WANTED[t] <= found[t] for t in WANTED)
        async with db.read() as conn:
            assert (await conn.execute(sa.select(USERS.c.user_id))).scalar_one() == "kept"
    finally:
        await db.close()
