"""The storage contract, run against a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from storage import journal, surveys
from storage.db import Database
from storage.migrations import LATEST, SchemaTooNew, current_version, migrate
from storage.sqlutil import SURVEYS, USERS

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


async def seed(db: Database, count: int, due: datetime) -> None:
    async with db.write() as conn:
        await conn.execute(sa.insert(USERS), [
            {"user_id": f"u{i}", "email": f"u{i}@x.io", "updated_at": NOW} for i in range(count)])
        await conn.execute(sa.insert(SURVEYS), [
            {"user_id": f"u{i}", "token": f"t{i}", "state": "pending", "due_at": due,
             "created_at": NOW} for i in range(count)])


async def test_migrate_stamps_latest_and_refuses_newer(db_url: str) -> None:
    db = Database(db_url)
    try:
        assert await current_version(db) is None
        assert await migrate(db, NOW) == (None, LATEST)
        assert await migrate(db, NOW) == (LATEST, LATEST)  # idempotent
        async with db.write() as conn:
            await conn.execute(sa.text("UPDATE npsd_schema SET version = :v"), {"v": LATEST + 1})
        with pytest.raises(SchemaTooNew):
            await migrate(db, NOW)
    finally:
        await db.close()


async def test_sqlite_is_durable_by_configuration(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'n.db'}")
    try:
        await migrate(db, NOW)
        async with db.write() as conn:
            mode = (await conn.execute(sa.text("PRAGMA journal_mode"))).scalar()
            sync = (await conn.execute(sa.text("PRAGMA synchronous"))).scalar()
            busy = (await conn.execute(sa.text("PRAGMA busy_timeout"))).scalar()
        assert mode == "wal" and sync == 2 and busy is not None and busy >= 5000  # 2 = FULL
    finally:
        await db.close()


async def test_concurrent_claims_never_overlap(db_url: str) -> None:
    dbs = [Database(db_url) for _ in range(3)]
    try:
        await migrate(dbs[0], NOW)
        await seed(dbs[0], 900, NOW - timedelta(minutes=1))

        async def sweep(db: Database, owner: str) -> list[int]:
            got: list[int] = []
            while True:
                claimed = await surveys.claim_due(db, NOW, owner, 50, timedelta(seconds=30))
                if not claimed:
                    return got
                got += [c.id for c in claimed]

        async with asyncio.timeout(60):  # a claim that never empties the queue loops forever
            results = await asyncio.gather(*(sweep(db, f"w{i}") for i, db in enumerate(dbs)))
        every = [i for r in results for i in r]
        assert len(every) == 900 and len(set(every)) == 900
    finally:
        for db in dbs:
            await db.close()


async def test_expired_leases_return_or_fail_by_handoff(db_url: str) -> None:
    db = Database(db_url)
    try:
        await migrate(db, NOW)
        await seed(db, 4, NOW - timedelta(minutes=1))
        claimed = await surveys.claim_due(db, NOW, "dead:1:x", 4, timedelta(seconds=30))
        handed = await journal.settle(db, [], NOW, owner="dead:1:x", lease=timedelta(seconds=30),
                                      handoff=[claimed[0].id], renew=False)
        assert handed == {claimed[0].id}
        assert await surveys.release_expired_leases(db, NOW + timedelta(seconds=10)) == (0, 0)
        back, failed = await surveys.release_expired_leases(db, NOW + timedelta(seconds=31))
        assert (back, failed) == (3, 1)
        again = await surveys.claim_due(db, NOW + timedelta(seconds=32), "alive:2:y", 10,
                                        timedelta(seconds=30))
        assert sorted(c.id for c in again) == sorted(c.id for c in claimed[1:])
        # A late hand-off by the dead holder is refused: the claim is no longer its own.
        assert await journal.settle(db, [], NOW, owner="dead:1:x", lease=timedelta(seconds=30),
                                    handoff=[again[0].id], renew=False) == set()
    finally:
        await db.close()


async def test_earliest_due(db_url: str) -> None:
    db = Database(db_url)
    try:
        await migrate(db, NOW)
        assert await surveys.earliest_due(db) is None
        await seed(db, 2, NOW + timedelta(hours=1))
        assert await surveys.earliest_due(db) == NOW + timedelta(hours=1)
    finally:
        await db.close()


async def test_settle_records_a_chunk_and_hands_off_the_next(db_url: str) -> None:
    db = Database(db_url)
    lease = timedelta(seconds=30)
    try:
        await migrate(db, NOW)
        await seed(db, 6, NOW - timedelta(minutes=1))
        claimed = await surveys.claim_due(db, NOW, "me:1:x", 6, lease)
        ids = [c.id for c in claimed]
        assert await journal.settle(db, [], NOW, owner="me:1:x", lease=lease,
                                    handoff=ids[:3]) == set(ids[:3])
        expires = NOW + timedelta(days=30)
        outcomes = [
            surveys.Outcome(ids[0], claimed[0].user_id, "sent", "sent", expires_at=expires),
            surveys.Outcome(ids[1], claimed[1].user_id, "failed", "failed: 550 no"),
            surveys.Outcome(ids[2], claimed[2].user_id, "pending", "retry at T: 451",
                            due_at=NOW + timedelta(minutes=5)),
        ]
        later = NOW + timedelta(seconds=20)
        mine = await journal.settle(db, outcomes, later, owner="me:1:x", lease=lease,
                                    handoff=ids[3:], renew=False)
        assert mine == set(ids[3:])
        async with db.read() as conn:
            rows = {r.id: r for r in await conn.execute(sa.select(SURVEYS))}
            decisions = (await conn.execute(sa.text("SELECT count(*) FROM decisions"))).scalar()
        assert rows[ids[0]].state == "sent" and rows[ids[0]].lease_owner is None
        assert rows[ids[1]].state == "failed" and rows[ids[1]].last_error == "failed: 550 no"
        assert rows[ids[2]].state == "pending" and rows[ids[2]].attempts == 1
        assert rows[ids[2]].handoff_at is None
        assert all(rows[i].handoff_at is not None for i in ids[3:])
        assert decisions == 3
        # The handed-off claims' leases run from the hand-off; nothing else was renewed.
        assert await surveys.release_expired_leases(db, later + timedelta(seconds=29)) == (0, 0)
        assert await surveys.release_expired_leases(db, later + timedelta(seconds=31)) == (0, 3)
    finally:
        await db.close()


async def test_upgrade_from_schema_1_keeps_the_intake_log_without_user_ids(db_url: str) -> None:
    db = Database(db_url)
    try:
        await migrate(db, NOW)
        # Turn it into a schema-1 database: the intake log as it was, with a row in it.
        async with db.write() as conn:
            await conn.execute(sa.text("DROP TABLE events"))
            await conn.execute(sa.text(
                "CREATE TABLE events (message_id VARCHAR NOT NULL PRIMARY KEY, "
                "received_at TIMESTAMP NOT NULL, type VARCHAR NOT NULL, user_id VARCHAR, "
                "anonymous_id VARCHAR, timestamp TIMESTAMP, name VARCHAR)"))
            for column in ("received_at", "user_id", "anonymous_id"):
                await conn.execute(sa.text(f"CREATE INDEX ix_events_{column} ON events ({column})"))
            await conn.execute(sa.text(
                "INSERT INTO events VALUES ('m1', '2026-03-02 10:00:00', 'track', 'u1', 'a1', "
                "'2026-03-02 09:59:00', 'Opened')"))
            await conn.execute(sa.text("UPDATE npsd_schema SET version = 1"))
        assert await migrate(db, NOW) == (1, LATEST)
        async with db.read() as conn:
            columns = await conn.run_sync(
                lambda c: {col["name"] for col in sa.inspect(c).get_columns("events")})
            rows = (await conn.execute(sa.text("SELECT message_id, type, name FROM events"))).all()
        assert columns == {"message_id", "received_at", "type", "timestamp", "name"}
        assert [tuple(r) for r in rows] == [("m1", "track", "Opened")]  # dedup still knows m1
    finally:
        await db.close()


_V2_SURVEYS_SQLITE = (
    "CREATE TABLE surveys (id INTEGER NOT NULL PRIMARY KEY, user_id VARCHAR NOT NULL, "
    "token VARCHAR NOT NULL UNIQUE, kind VARCHAR NOT NULL, state VARCHAR NOT NULL, "
    "due_at DATETIME NOT NULL, created_at DATETIME NOT NULL, sent_at DATETIME, "
    "handoff_at DATETIME, lease_owner VARCHAR, lease_until DATETIME, "
    "attempts INTEGER NOT NULL, last_error VARCHAR, expires_at DATETIME, "
    "reminder_due_at DATETIME, reminder_sent_at DATETIME, score INTEGER, comment VARCHAR, "
    "answered_at DATETIME, answer_revision INTEGER NOT NULL, synced_revision INTEGER NOT NULL, "
    "needs_sync BOOLEAN NOT NULL)")


async def _make_schema_2(db: Database) -> None:
    """Turn a fresh database into a schema-2 one: surveys without email_key (and, on SQLite,
    without AUTOINCREMENT), with an answered survey in it."""
    async with db.write() as conn:
        if db.dialect.name == "sqlite":  # one-off DDL of schema 2
            await conn.execute(sa.text("DROP TABLE surveys"))
            await conn.execute(sa.text(_V2_SURVEYS_SQLITE))
            for name, columns in (("user_id", "user_id"), ("state_due", "state, due_at"),
                                  ("reminder_due_at", "reminder_due_at"),
                                  ("needs_sync", "needs_sync")):
                await conn.execute(sa.text(f"CREATE INDEX ix_surveys_{name} ON surveys "
                                           f"({columns})"))
        else:
            await conn.execute(sa.text("DROP INDEX ix_surveys_email_key"))
            await conn.execute(sa.text("ALTER TABLE surveys DROP COLUMN email_key"))
        await conn.execute(sa.text(
            "INSERT INTO surveys (id, user_id, token, kind, state, due_at, created_at, "
            "attempts, score, comment, answer_revision, synced_revision, needs_sync) VALUES "
            "(5, 'u1', 'tok5', 'survey', 'answered', :at, :at, 1, 9, 'kept', 1, 0, :t)"),
            {"at": NOW, "t": True})
        await conn.execute(sa.text("UPDATE npsd_schema SET version = 2"))


async def test_upgrade_from_schema_2_adds_the_address_key_and_keeps_surveys(db_url: str) -> None:
    db = Database(db_url)
    try:
        await migrate(db, NOW)
        await _make_schema_2(db)
        assert await migrate(db, NOW) == (2, LATEST)
        async with db.read() as conn:
            inspected = await conn.run_sync(lambda c: (
                {col["name"] for col in sa.inspect(c).get_columns("surveys")},
                {ix["name"] for ix in sa.inspect(c).get_indexes("surveys")}))
            row = (await conn.execute(sa.select(
                SURVEYS.c.id, SURVEYS.c.user_id, SURVEYS.c.score, SURVEYS.c.comment,
                SURVEYS.c.needs_sync, SURVEYS.c.email_key))).one()
        columns, indexes = inspected
        assert "email_key" in columns and "ix_surveys_email_key" in indexes
        assert {"ix_surveys_user_id", "ix_surveys_state_due", "ix_surveys_needs_sync"} <= indexes
        assert tuple(row) == (5, "u1", 9, "kept", True, None)
        # Ids are never reused once the newest row is deleted (erasure deletes rows).
        async with db.write() as conn:
            new = (await conn.execute(sa.insert(SURVEYS).values(
                user_id="u2", token="tok-a", state="pending", due_at=NOW, created_at=NOW)
                .returning(SURVEYS.c.id))).scalar_one()
            await conn.execute(sa.delete(SURVEYS).where(SURVEYS.c.id == new))
            again = (await conn.execute(sa.insert(SURVEYS).values(
                user_id="u3", token="tok-b", state="pending", due_at=NOW, created_at=NOW)
                .returning(SURVEYS.c.id))).scalar_one()
        assert again > new  # (PostgreSQL: a sequence, which never went back anyway)
        assert db.dialect.name != "sqlite" or (new, again) == (6, 7)
    finally:
        await db.close()


async def test_hand_off_refuses_an_address_surveyed_within_the_interval(db_url: str) -> None:
    """The last line of the one-survey-per-address rule: even a claim that passed the
    dispatcher's check (another process sent to the address meanwhile) is not handed off."""
    db = Database(db_url)
    try:
        await migrate(db, NOW)
        await seed(db, 3, NOW)
        async with db.write() as conn:
            await conn.execute(sa.update(SURVEYS).values(email_key="same-key"))
            await conn.execute(sa.update(SURVEYS).where(SURVEYS.c.user_id == "u0")
                               .values(state="sent", sent_at=NOW - timedelta(days=3)))
        claimed = await surveys.claim_due(db, NOW, "me", 10, timedelta(seconds=25))
        ids = sorted(c.id for c in claimed)
        assert len(ids) == 2
        week, lease = timedelta(days=7), timedelta(seconds=25)
        def hand_off(some: list[int], interval: timedelta) -> Awaitable[set[int]]:
            return journal.settle(db, [], NOW, owner="me", lease=lease, handoff=some,
                                  renew=False, interval=interval)

        assert await hand_off(ids, week) == set()
        # Outside the interval the address is free again, for one of them.
        assert await hand_off(ids[:1], timedelta(days=1)) == {ids[0]}
        assert await hand_off(ids[1:], timedelta(days=1)) == set()
    finally:
        await db.close()
