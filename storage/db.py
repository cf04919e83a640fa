"""Engines and transactions for both backends.

SQLite: WAL with synchronous=FULL (an acknowledged event survives power loss), a busy timeout,
and every write transaction opened with BEGIN IMMEDIATE (a deferred BEGIN that reads then
writes fails with "database is locked" instead of waiting). Writes go through one connection;
reads use a separate pool so they never queue behind the writer.
PostgreSQL: one pool for both; row claims use FOR UPDATE SKIP LOCKED.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from storage.checkpointer import WRITER_AUTOCHECKPOINT
from storage.sql_run import run_sync
from storage.sql_steps import Steps

T = TypeVar("T")


class StoreUnavailable(Exception):
    """The store could not commit or answer: the caller answers 503 or retries later."""


def utc(value: datetime | None) -> datetime | None:
    """SQLite gives back naive datetimes; everything in npsd is aware UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utc_required(value: datetime) -> datetime:
    """`utc` for a column that is never NULL."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Database:
    def __init__(self, url: str, *, pool_size: int = 5) -> None:
        self.url = url
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        self.sqlite_path: str | None = None  # the database file, when there is one
        if self.is_sqlite:
            database = parsed.database or ""
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
                self.sqlite_path = database
            # Every use of the writer ends its transaction itself (engine.begin(), or
            # run_transaction's COMMIT/ROLLBACK), so the pool's rollback-on-return, one more
            # thread hop per intake group, is left out.
            self.writer = create_async_engine(url, poolclass=sa.pool.AsyncAdaptedQueuePool,
                                              pool_size=1, max_overflow=0, pool_timeout=60,
                                              pool_reset_on_return=None)
            self.reader = create_async_engine(url, poolclass=NullPool)
            _sqlite_pragmas(self.writer, immediate=True)
            _sqlite_pragmas(self.reader, immediate=False)
        else:
            self.writer = create_async_engine(
                url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
            )
            self.reader = self.writer

    @property
    def dialect(self) -> str:
        return "sqlite" if self.is_sqlite else "postgresql"

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction; database errors become StoreUnavailable."""
        try:
            async with self.writer.begin() as conn:
                yield conn
        except (OperationalError, DBAPIError, OSError) as exc:
            raise StoreUnavailable(str(exc.__class__.__name__) + ": " + _short(exc)) from exc

    async def in_writer_thread(self, work: Callable[[sqlite3.Connection], bool]) -> None:
        """SQLite: call `work` with the writer connection, in that connection's own thread,
        holding it meanwhile (so no other writer in this process interleaves). `work` runs
        its own transactions and returns False when one failed: the connection is then
        replaced, whatever state the failure left it in."""
        try:
            async with self.writer.connect() as conn:
                fairy = await conn.get_raw_connection()
                driver: Any = fairy.driver_connection  # aiosqlite.Connection
                healthy = False
                try:
                    healthy = await driver._execute(work, driver._conn)
                finally:
                    if not healthy:
                        await conn.invalidate()
        except (OperationalError, DBAPIError, OSError, sqlite3.Error) as exc:
            raise StoreUnavailable(str(exc.__class__.__name__) + ": " + _short(exc)) from exc

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self.reader.connect() as conn:
                yield conn
        except (OperationalError, DBAPIError, OSError) as exc:
            raise StoreUnavailable(str(exc.__class__.__name__) + ": " + _short(exc)) from exc

    async def close(self) -> None:
        await self.writer.dispose()
        if self.reader is not self.writer:
            await self.reader.dispose()


def run_transaction(conn: sqlite3.Connection, steps: Steps[T]) -> T:
    """SQLite, in the connection's own thread: the steps as one BEGIN IMMEDIATE transaction."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = run_sync(steps, conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


def _short(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.splitlines()[0][:200] if text else exc.__class__.__name__


def _sqlite_pragmas(engine: AsyncEngine, *, immediate: bool) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" hook below issue BEGIN itself.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA foreign_keys=OFF")
        if immediate:
            # Deleted rows (an erasure) are zeroed where their pages are written anyway: no
            # fragment of the person lingers in the b-tree pages, at no extra I/O.
            cursor.execute("PRAGMA secure_delete=FAST")
        # storage.checkpointer copies the log in the background; this finishes the job.
        cursor.execute(f"PRAGMA wal_autocheckpoint={WRITER_AUTOCHECKPOINT}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
