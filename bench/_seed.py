"""Databases for the benchmarks: the schema as npsd creates it, seeded users and surveys
(SQLite or PostgreSQL, loaded in bulk), and scratch PostgreSQL databases."""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _common import PG_ADMIN_URL

from storage.sqlutil import chunks
from storage.survey_plan import email_key


def migrate(storage_url: str) -> None:
    """Create the schema exactly as npsd does."""
    from storage.db import Database
    from storage.migrations import migrate as run_migrate

    async def go() -> None:
        db = Database(storage_url)
        try:
            await run_migrate(db, datetime.now(UTC))
        finally:
            await db.close()

    asyncio.run(go())


def sqlite_time(value: datetime) -> str:
    """How SQLAlchemy's SQLite DateTime stores a value (naive UTC, microseconds)."""
    return value.astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


USER_COLS = ("user_id", "anonymous", "email", "first_name", "name", "traits", "trait_times",
             "event_count", "session_count", "unsubscribe_synced", "updated_at")
SURVEY_COLS = ("user_id", "token", "kind", "state", "due_at", "created_at", "attempts",
               "answer_revision", "synced_revision", "needs_sync", "score", "comment",
               "answered_at", "sent_at", "email_key")


def user_row(i: int, now: Any) -> tuple[Any, ...]:
    uid = f"user-{i:07d}"
    traits = json.dumps({"email": f"{uid}@example.test", "firstName": f"F{i}"})
    return (uid, False, f"{uid}@example.test", f"F{i}", f"F{i} L{i}", traits, "{}", 0, 0, True, now)


def survey_row(i: int, state: str, due: Any, now: Any, answered: Any = None) -> tuple[Any, ...]:
    uid = f"user-{i:07d}"
    key = email_key(f"{uid}@example.test")  # as the planner stores it with the survey
    if state == "answered":
        return (uid, secrets.token_urlsafe(16), "survey", "answered", due, now, 0, 1, 0, True,
                i % 11, f"comment {i}" if i % 3 else None, answered, due, key)
    return (uid, secrets.token_urlsafe(16), "survey", state, due, now, 0, 0, 0, False,
            None, None, None, None, key)


def seed_sqlite(path: Path, users: int, state: str, due: datetime,
                accounts: int = 0) -> float:
    """users users, one survey each, in `state` (pending or answered); returns seconds."""
    started = time.perf_counter()
    now_s = sqlite_time(datetime.now(UTC))
    due_s = sqlite_time(due)
    answered_s = sqlite_time(due + timedelta(hours=1))
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")  # seeding only; npsd uses FULL
    con.execute("PRAGMA cache_size=-200000")
    u_sql = f"INSERT INTO users ({','.join(USER_COLS)}) VALUES ({','.join('?' * len(USER_COLS))})"
    s_sql = (f"INSERT INTO surveys ({','.join(SURVEY_COLS)}) "
             f"VALUES ({','.join('?' * len(SURVEY_COLS))})")
    # Bulk load without the secondary indexes, then rebuild them (several times faster).
    indexes = con.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND "
                          "tbl_name IN ('users', 'surveys') AND sql IS NOT NULL").fetchall()
    with con:
        for name, _ in indexes:
            con.execute(f'DROP INDEX "{name}"')
        for part in chunks(range(users), 50_000):
            con.executemany(u_sql, (user_row(i, now_s) for i in part))
            con.executemany(s_sql, (survey_row(i, state, due_s, now_s, answered_s) for i in part))
        if accounts:
            con.executemany(
                "INSERT INTO accounts (group_id, traits, trait_times, updated_at) "
                "VALUES (?, '{}', '{}', ?)", ((f"acct-{g:05d}", now_s) for g in range(accounts)))
            con.executemany(
                "INSERT INTO memberships (user_id, group_id, active, changed_at) "
                "VALUES (?, ?, 1, ?)",
                ((f"user-{i:07d}", f"acct-{i % accounts:05d}", now_s) for i in range(users)))
        for _, sql in indexes:
            con.execute(sql)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return time.perf_counter() - started


async def seed_postgres(raw_url: str, users: int, state: str, due: datetime,
                        offset: int = 0) -> float:
    import asyncpg
    started = time.perf_counter()
    now = datetime.now(UTC)
    answered = due + timedelta(hours=1)
    conn = await asyncpg.connect(raw_url)
    try:
        for part in chunks(range(offset, offset + users), 50_000):
            await conn.copy_records_to_table(
                "users", columns=list(USER_COLS), records=[user_row(i, now) for i in part])
            await conn.copy_records_to_table(
                "surveys", columns=list(SURVEY_COLS),
                records=[survey_row(i, state, due, now, answered) for i in part])
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return time.perf_counter() - started


async def create_pg_database() -> tuple[str, str]:
    """(name, raw asyncpg url) of a fresh database."""
    import asyncpg
    name = "npsd_bench_" + secrets.token_hex(5)
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return name, f"{base}/{name}"


async def drop_pg_database(name: str) -> None:
    import asyncpg
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def pg_version() -> str:
    import asyncpg

    async def go() -> str:
        conn = await asyncpg.connect(PG_ADMIN_URL)
        try:
            return str(await conn.fetchval("SHOW server_version"))
        finally:
            await conn.close()

    try:
        return asyncio.run(go())
    except Exception as exc:
        return f"unreachable ({exc.__class__.__name__})"


async def pg_commit_rate(raw_url: str, seconds: float = 2.0, conns: int = 1,
                         rows: int = 100) -> float:
    """Rows/s of raw `rows`-row transactions (executemany INSERT, COMMIT) from `conns`
    connections at once: what the server and its WAL flushes allow, npsd aside."""
    import asyncpg

    setup = await asyncpg.connect(raw_url)
    await setup.execute("CREATE TABLE IF NOT EXISTS ref (message_id text PRIMARY KEY, "
                        "received_at timestamptz, type text, timestamp timestamptz, name text)")
    now = datetime.now(UTC)
    done = [0] * conns

    async def worker(w: int) -> None:
        conn = await asyncpg.connect(raw_url)
        try:
            while time.perf_counter() < deadline:
                base = done[w]
                async with conn.transaction():
                    await conn.executemany(
                        "INSERT INTO ref VALUES ($1, $2, 'track', $3, 'Bench Event')",
                        [(f"w{w}-{base + i}", now, now) for i in range(rows)])
                done[w] += rows
        finally:
            await conn.close()

    t0 = time.perf_counter()
    deadline = t0 + seconds
    try:
        await asyncio.gather(*(worker(w) for w in range(conns)))
        return sum(done) / (time.perf_counter() - t0)
    finally:
        await setup.execute("DROP TABLE ref")
        await setup.close()
