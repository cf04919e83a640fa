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

from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.dialect import dialect_for
from storage.sqlite_writer import SqliteWriter


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
            Path(database).parent.mkdir(parents=True, exist_ok=True)
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
