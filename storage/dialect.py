"""Every difference between the two backends, in one value per backend.

npsd speaks the SQL both SQLite and PostgreSQL understand (ON CONFLICT … DO NOTHING / DO
UPDATE SET … = excluded.…, RETURNING, the same on both, so the upsert form is not a
difference). What is left differs here, and nowhere else in storage/: how the engines are
built, the cross-process lock of a migration, whether writes in this process take turns
with a group-commit writer thread, the claim's skip-locked clause, row locks for a
read-modify-write, the intake's per-key locks on the book and which of its failures are
worth running again, the month key of a report, and how the intake's fast path
(storage/fast_path.py) encodes times and flags and writes many rows. A caller asks
`db.dialect` instead of testing the backend's name.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from storage.checkpointer import WRITER_AUTOCHECKPOINT
from storage.pool_ping import ping_when_idle

S = TypeVar("S", bound=sa.Select[Any])


@dataclass(frozen=True)
class Dialect:
    """One backend's differences (the instances are SQLITE and POSTGRESQL below)."""

    name: str  # "sqlite" or "postgresql": for logs and the status page, not for `if`s
    # The intake commits in a writer thread with its own sqlite3 connection
    # (storage/sqlite_writer.py), and every write in this process takes turns with it.
    writer_thread: bool
    # Row locks a read-modify-write takes in the fast path's SQL (SQLite's BEGIN IMMEDIATE
    # already excludes every other writer).
    row_locks: str
    # The fast path's form of `exclusive` ("" where the write transaction already excludes),
    # and of the same lock taken shared (with other holders of it shared, never with its
    # exclusive holder: every intake transaction holds the book's key so, an import alone).
    exclusive_sql: str
    shared_sql: str
    # The fast path's 'YYYY-MM-DD' (UTC) of a time column, `{}` for the column (the running
    # totals' day, storage/nps_totals.py).
    day_sql: str
    # The intake's per-key locks on the book (storage/book_locks.py), in the fast path's
    # SQL: one statement taking every key of an array, in the array's order ("" where the
    # write transaction already excludes every other writer: no key is then locked).
    keys_sql: str
    # The fast path writes many rows as one statement over one array per column
    # (storage/pg_arrays.py) rather than by executemany or VALUES lists: over a network a
    # statement per row costs a round trip, a long VALUES list a new plan; in-process
    # (SQLite) neither does.
    row_arrays: bool
    # How many rows the running totals keep per day (storage/nps_totals.py): each
    # transaction adds to one, chosen at random, so that concurrent writers (every
    # dispatcher's commit counts its sends) do not wait on one row's lock. One where
    # transactions take turns anyway.
    counter_shards: int
    # The INSERT column and value that store a row away from its insertion order (SQLite's
    # rowid, at random), so that two tables written together cannot be matched row by row;
    # empty where the table has no such order to give away cheaply (PostgreSQL).
    random_rowid: tuple[str, str] = ("", "")

    def engines(self, url: str, pool_size: int) -> tuple[AsyncEngine, AsyncEngine]:
        """(writer, reader) engines for `url`."""
        raise NotImplementedError

    async def exclusive(self, conn: AsyncConnection, key: int) -> None:
        """Hold lock `key` until `conn`'s transaction ends, across processes."""
        raise NotImplementedError

    def claimable(self, due: S) -> S:
        """The SELECT of rows to claim, so that concurrent claimers take different rows."""
        raise NotImplementedError

    def retryable(self, exc: BaseException) -> bool:
        """Whether a failed transaction lost only a race with another (a deadlock between
        the intake's per-key locks, a serialization failure) and may simply run again."""
        raise NotImplementedError

    def month_key(self, at: sa.ColumnElement[Any]) -> sa.ColumnElement[str]:
        """'YYYY-MM' of a stored time, in UTC."""
        raise NotImplementedError

    def time_value(self, value: datetime) -> Any:
        """A time as the fast path binds it: what SQLAlchemy's DateTime would store."""
        raise NotImplementedError

    def time_reader(self) -> Callable[[Any], datetime]:
        """A stored time (never NULL) back to an aware UTC datetime, without checks: the
        fast path calls it for rows × columns."""
        raise NotImplementedError

    def flag_value(self, value: bool) -> Any:
        """A boolean as the fast path binds it."""
        raise NotImplementedError


@dataclass(frozen=True)
class _Sqlite(Dialect):
    def engines(self, url: str, pool_size: int) -> tuple[AsyncEngine, AsyncEngine]:
        # Every use of the writer ends its transaction itself (engine.begin()), so the
        # pool's rollback-on-return, one more thread hop per write, is left out. Reads use
        # their own connections, so they never queue behind the writer.
        writer = create_async_engine(url, poolclass=sa.pool.AsyncAdaptedQueuePool,
                                     pool_size=1, max_overflow=0, pool_timeout=60,
                                     pool_reset_on_return=None)
        reader = create_async_engine(url, poolclass=NullPool)
        _on_connect(writer, writer=True)
        _on_connect(reader, writer=False)
        return writer, reader

    async def exclusive(self, conn: AsyncConnection, key: int) -> None:
        pass  # the write transaction's BEGIN IMMEDIATE already excludes every other writer

    def claimable(self, due: S) -> S:
        return due  # BEGIN IMMEDIATE: one writer at a time, so no two claimers meet

    def retryable(self, exc: BaseException) -> bool:
        return False  # one writer at a time: no deadlock to lose (a busy database is a 503)

    def month_key(self, at: sa.ColumnElement[Any]) -> sa.ColumnElement[str]:
        return sa.func.strftime("%Y-%m", at)  # stored as naive UTC text

    def time_value(self, value: datetime) -> Any:
        utc = value if value.tzinfo is UTC else value.astimezone(UTC)
        # Naive UTC text of fixed width, as SQLAlchemy's DateTime writes it (so it sorts and
        # compares with the rest): the text of strftime("%Y-%m-%d %H:%M:%S.%f"), faster.
        return utc.isoformat(" ", "microseconds")[:26]

    def time_reader(self) -> Callable[[Any], datetime]:
        parse = datetime.fromisoformat
        # Appending the offset is several times cheaper than .replace(tzinfo=UTC).
        return lambda text: parse(text + "+00:00")

    def flag_value(self, value: bool) -> Any:
        return int(value)


@dataclass(frozen=True)
class _Postgresql(Dialect):
    def engines(self, url: str, pool_size: int) -> tuple[AsyncEngine, AsyncEngine]:
        engine = create_async_engine(url, pool_size=pool_size, max_overflow=pool_size)
        ping_when_idle(engine)
        return engine, engine

    async def exclusive(self, conn: AsyncConnection, key: int) -> None:
        await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))

    def claimable(self, due: S) -> S:
        return due.with_for_update(skip_locked=True)

    def retryable(self, exc: BaseException) -> bool:
        # Anywhere in the chain: the fast path's steps raise asyncpg's own exceptions, and
        # SQLAlchemy's (and storage.db's StoreUnavailable) wrap them.
        seen: BaseException | None = exc
        for _ in range(8):
            if seen is None:
                return False
            if getattr(seen, "sqlstate", None) in _RETRYABLE:
                return True
            seen = seen.__cause__ or getattr(seen, "orig", None)
        return False

    def month_key(self, at: sa.ColumnElement[Any]) -> sa.ColumnElement[str]:
        return sa.func.to_char(sa.func.timezone("UTC", at), "YYYY-MM")

    def time_value(self, value: datetime) -> Any:
        return value  # asyncpg takes aware datetimes

    def time_reader(self) -> Callable[[Any], datetime]:
        return lambda value: value.astimezone(UTC)

    def flag_value(self, value: bool) -> Any:
        return value


_RETRYABLE = frozenset({"40P01", "40001"})  # deadlock_detected, serialization_failure

SQLITE: Dialect = _Sqlite("sqlite", writer_thread=True, row_locks="", exclusive_sql="",
                          shared_sql="", day_sql="substr({}, 1, 10)",  # naive UTC text
                          keys_sql="", row_arrays=False, counter_shards=1,
                          random_rowid=("rowid, ", "random(), "))  # any 64-bit rowid
POSTGRESQL: Dialect = _Postgresql(
    "postgresql", writer_thread=False, row_locks=" FOR UPDATE",
    exclusive_sql="SELECT pg_advisory_xact_lock(?)",
    shared_sql="SELECT pg_advisory_xact_lock_shared(?)",
    day_sql="to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
    # In array order (the function scan keeps it): storage.book_locks passes them sorted.
    keys_sql="SELECT count(pg_advisory_xact_lock(k)) FROM unnest(?::bigint[]) AS k",
    row_arrays=True, counter_shards=16)


def dialect_for(url: str) -> Dialect:
    return SQLITE if make_url(url).get_backend_name() == "sqlite" else POSTGRESQL


def sqlite_pragmas(conn: sqlite3.Connection | Any, *, writer: bool) -> None:
    """WAL with synchronous=FULL (an acknowledged event survives power loss) and a busy
    timeout, on every SQLite connection npsd writes or reads through; for a writer also
    secure_delete and the automatic checkpoint (storage/checkpointer.py)."""
    conn.isolation_level = None  # autocommit: every transaction issues its own BEGIN
    pragmas = ["journal_mode=WAL", "synchronous=FULL", "busy_timeout=10000", "foreign_keys=OFF"]
    if writer:
        # Deleted rows (an erasure) are zeroed, and so are the pages and overflow pages a
        # delete or an update frees: no copy of a person lingers in the file's free pages.
        # (FAST would leave freed pages as they were.) Intake seldom frees a page.
        pragmas.append("secure_delete=ON")
    # storage.checkpointer copies the log in the background; this finishes the job.
    pragmas.append(f"wal_autocheckpoint={WRITER_AUTOCHECKPOINT}")
    cursor = conn.cursor()  # (SQLAlchemy's aiosqlite adapter has no execute of its own)
    for pragma in pragmas:
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _on_connect(engine: AsyncEngine, *, writer: bool) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        sqlite_pragmas(dbapi_connection, writer=writer)

    @event.listens_for(engine.sync_engine, "begin")
    def on_begin(conn: Any) -> None:
        # A deferred BEGIN that reads then writes fails with "database is locked" instead
        # of waiting: a writer takes the lock at BEGIN.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")
