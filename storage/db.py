"""Engines and transactions for both backends (what differs is storage/dialect.py).

SQLite: writes go through one connection (the pool's) and the intake writer's own
(storage/sqlite_writer.py), which take turns in this process; reads use a separate pool so
they never queue behind a writer. PostgreSQL: one pool for both.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.dialect import dialect_for
from storage.fast_path import Steps, run_async
from storage.sqlite_writer import SqliteWriter, run_transaction

T = TypeVar("T")
BULK_CACHE_KB = 64 * 1024  # SQLite's page cache for bulk writes (the default is 2 MB)


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
        self.dialect = dialect_for(url)
        database = make_url(url).database or ""
        self.sqlite_path: str | None = None  # the database file, when there is one
        if self.dialect.writer_thread and database and database != ":memory:":
            parent = Path(database).parent
            try:
                parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreUnavailable(f"storage.url: cannot create the directory {parent} "
                                       f"for the database: {exc.strerror or exc}") from exc
            self.sqlite_path = database
        self.writer, self.reader = self.dialect.engines(url, pool_size)
        self._intake_writer = SqliteWriter(self.sqlite_path)
        # SQLite: the pool's writer and the intake writer thread take turns, in order of
        # arrival (one lock per event loop: a store may be reopened on another).
        self._turns: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None

    @asynccontextmanager
    async def _turn(self) -> AsyncIterator[None]:
        if not self.dialect.writer_thread:
            yield
            return
        loop = asyncio.get_running_loop()
        if self._turns is None or self._turns[0] is not loop:
            self._turns = (loop, asyncio.Lock())
        async with self._turns[1]:
            yield

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction; database errors become StoreUnavailable."""
        try:
            async with self._turn(), self.writer.begin() as conn:
                yield conn
        except (OperationalError, DBAPIError, OSError) as exc:
            raise StoreUnavailable(str(exc.__class__.__name__) + ": " + _short(exc)) from exc

    async def in_writer_thread(self, work: Callable[[sqlite3.Connection], bool]) -> None:
        """SQLite: call `work` with the intake writer's connection, in its own thread,
        taking this process's writing turn meanwhile. `work` runs its own transactions and
        returns False when one failed: the connection is then replaced."""
        try:
            async with self._turn():
                await self._intake_writer.run(work)
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailable(str(exc.__class__.__name__) + ": " + _short(exc)) from exc

    async def run_steps(self, steps: Steps[T], *, write: bool, bulk: bool = False) -> T:
        """The fast path's `steps` (storage/fast_path.py) as one transaction: on a SQLite
        file in the intake writer's thread (one thread hop for the whole transaction, and
        SQLite works without the GIL while this process's event loop goes on), elsewhere on
        the driver under a SQLAlchemy transaction. `bulk` (an import's batches): SQLite
        keeps a larger page cache on that connection from then on, so the random-keyed
        indexes a batch writes into are not read back from the file page by page."""
        if self.sqlite_path is None:
            async with (self.write() if write else self.read()) as conn:
                return await run_async(steps, conn)
        done: list[T] = []

        def work(conn: sqlite3.Connection) -> bool:
            if bulk:
                conn.execute(f"PRAGMA cache_size = -{BULK_CACHE_KB}")
            done.append(run_transaction(conn, steps, write=write))
            return True  # a failure raised, and the connection is replaced

        await self.in_writer_thread(work)
        return done[0]

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self.reader.connect() as conn:
                yield conn
        except (OperationalError, DBAPIError, OSError) as exc:
            raise StoreUnavailable(str(exc.__class__.__name__) + ": " + _short(exc)) from exc

    async def close(self) -> None:
        await self._intake_writer.close()
        await self.writer.dispose()
        if self.reader is not self.writer:
            await self.reader.dispose()


def _short(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.splitlines()[0][:200] if text else exc.__class__.__name__
