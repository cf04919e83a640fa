"""Schema 7 (the outbox of alerts and webhooks) on both backends: a fresh database has the
deliveries table; a schema-6 database is upgraded to it with its rows kept, and the table
takes, claims and settles a delivery."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from storage import deliveries
from storage.db import Database
from storage.deliveries import NewDelivery, Settled
from storage.migrations import LATEST, migrate
from storage.sqlutil import SURVEYS

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


async def _tables(db: Database) -> set[str]:
    async with db.read() as conn:
        return set(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))


async def test_fresh_and_upgraded_databases_have_the_outbox(db_url: str) -> None:
    db = Database(db_url)
    try:
        assert await migrate(db, NOW) == (None, LATEST)
        assert "deliveries" in await _tables(db)
        async with db.write() as conn:
            await conn.execute(sa.text("DROP TABLE deliveries"))
            await conn.execute(sa.insert(SURVEYS).values(
                user_id="u1", token="t1", state="answered", due_at=NOW, created_at=NOW,
                score=4))
            await conn.execute(sa.text("UPDATE npsd_schema SET version = 6"))
        assert await migrate(db, NOW) == (6, LATEST)
        assert "deliveries" in await _tables(db)
        async with db.read() as conn:
            assert (await conn.execute(sa.select(SURVEYS.c.score))).scalar_one() == 4
        async with db.write() as conn:
            await deliveries.insert_now(conn, [NewDelivery(
                "msg_1", "webhook", "https://r.example/x", "survey.answered", "{}", "u1", 1)],
                NOW)
        [claimed] = await deliveries.claim(db, NOW, "me", 10, timedelta(minutes=1))
        assert (claimed.webhook_id, claimed.attempts, claimed.retry_from) == ("msg_1", 0, NOW)
        assert await deliveries.claim(db, NOW, "other", 10, timedelta(minutes=1)) == []
        await deliveries.settle(db, [Settled(claimed.id, "pending", 500, "HTTP 500",
                                             NOW + timedelta(seconds=5))], NOW, "me")
        assert await deliveries.claim(db, NOW, "other", 10, timedelta(minutes=1)) == []
        [again] = await deliveries.claim(db, NOW + timedelta(seconds=5), "other", 10,
                                         timedelta(minutes=1))
        assert again.attempts == 1
        counts = await deliveries.counts(db, NOW + timedelta(seconds=5))
        assert (counts["pending"], counts["due_now"], counts["dead"]) == (1, 1, 0)
    finally:
        await db.close()
