"""The intake's raw-driver fast path: the one place npsd writes `?` SQL by hand.

Why: the intake transaction (storage/intake_store.record → book_io, survey_plan,
personal_data.erase_rows) writes many small rows per group commit, and at bench/intake.py's
target (25,000 events/s in 100-message batches: 40 µs per event for everything from parsing
to fsync, on one core) SQLAlchemy's per-statement work and per-row type processing cost more
than SQLite's own. Measured by bench/fast_path.py (the events INSERT … RETURNING and the
users' UPDATE of one 100-message group, both ways): Core, cached and executemany, took 2.9×
the fast path's time (116 against 40 µs per event, 2026-12-02, load average 5.5–5.9). Everything
else in storage/ is SQLAlchemy Core, but for the import (storage/import_store.py),
which writes its batches of answers through the same steps.

How: the book's load/apply/save is written once, as generators that yield `Fetch` and
`Many` steps and receive rows back. `run_sync` runs them on the SQLite writer thread's
plain sqlite3 connection (storage/sqlite_writer.py: a whole group commit is one thread
hop); `run_async` on the driver under an open SQLAlchemy transaction (asyncpg, with `?`
turned into `$n`; or aiosqlite, for an import on SQLite). The SQL is the subset both
backends speak (ON CONFLICT, RETURNING); `Values` converts by hand what SQLAlchemy's types
would, and writes many rows the backend's cheapest way (the encoding and the way are the
Dialect's: on PostgreSQL one statement over arrays, storage/pg_arrays.py).
"""

from __future__ import annotations

import random
import re
import sqlite3
from collections.abc import Awaitable, Callable, Generator, Iterable, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from storage import pg_arrays
from storage.dialect import Dialect
from storage.sqlutil import chunks

if TYPE_CHECKING:
    from storage.user_cache import UserRowCache

T = TypeVar("T")
Rows = list[tuple[Any, ...]]


class Fetch(NamedTuple):
    """One statement; the rows it returns (none for a plain write) are sent back."""

    sql: str
    params: Sequence[Any] = ()


class Many(NamedTuple):
    """One statement run for each parameter row (executemany); sends back no rows."""

    sql: str
    rows: Sequence[Sequence[Any]]


Step = Fetch | Many
Steps = Generator[Step, Rows, T]

IN_CHUNK = 2000  # bound parameters per statement: under SQLite's and asyncpg's limits


class Values:
    """Python values to and from one backend's column values, for one transaction."""

    def __init__(self, dialect: Dialect, now: datetime | None = None,
                 users_cache: UserRowCache | None = None) -> None:
        self._dialect = dialect
        # The SQLite intake writer's rows of users (storage/user_cache.py), else None.
        self.users_cache = users_cache
        self.flag = dialect.flag_value
        self.time_reader = dialect.time_reader
        # The transaction's own time recurs on every row it writes (updated_at, received_at).
        self._now = now
        self._now_value = dialect.time_value(now) if now is not None else None
        # An event's time is written twice (its events row, the user's last_seen).
        self._times: dict[datetime, Any] = {}
        # The running totals' row this transaction adds to (see Dialect.counter_shards):
        # one per transaction, so its rows of several days are locked in day order.
        self.shard = random.randrange(dialect.counter_shards)

    @property
    def dialect(self) -> Dialect:
        return self._dialect

    def ts(self, value: datetime | None) -> Any:
        """A time as SQLAlchemy's DateTime would store it on this backend."""
        if value is None:
            return None
        if value is self._now:
            return self._now_value
        found = self._times.get(value)
        if found is None:
            found = self._times[value] = self._dialect.time_value(value)
        return found

    @staticmethod
    def dt(value: Any) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, datetime):
            return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        # Appending the offset is several times cheaper than .replace(tzinfo=UTC).
        return datetime.fromisoformat(value + "+00:00")

    def day_sql(self, column: str) -> str:
        """'YYYY-MM-DD' (UTC) of a time column, in this backend's SQL."""
        return self._dialect.day_sql.format(column)

    def for_update(self) -> str:
        """Row locks for a read-modify-write (none needed on SQLite: BEGIN IMMEDIATE)."""
        return self._dialect.row_locks

    def exclusive(self, key: int) -> Steps[None]:
        """Hold lock `key` until the transaction ends, across processes (Dialect.exclusive)."""
        if self._dialect.exclusive_sql:
            yield Fetch(self._dialect.exclusive_sql, [key])

    def shared(self, key: int) -> Steps[None]:
        """Hold lock `key` shared until the transaction ends: with other holders of it
        shared, never with one holding it exclusively (Values.exclusive)."""
        if self._dialect.shared_sql:
            yield Fetch(self._dialect.shared_sql, [key])

    @property
    def locks_keys(self) -> bool:
        """Whether the intake locks the book's keys one by one (storage/book_locks.py), or
        its write transaction already excludes every other writer (SQLite)."""
        return bool(self._dialect.keys_sql)

    def insert_new(self, table: sa.Table, columns: tuple[str, ...],
                   rows: Sequence[Sequence[Any]], returning: str = "") -> Steps[Rows]:
        """INSERT … ON CONFLICT DO NOTHING of the rows, returning `returning` of those
        inserted: as one statement over arrays where the Dialect's row_arrays says so
        (storage/pg_arrays.py), else by executemany, or VALUES lists when rows come back."""
        if not rows:
            return []
        if self._dialect.row_arrays:
            tail = "ON CONFLICT DO NOTHING" + (f" RETURNING {returning}" if returning else "")
            return (yield Fetch(pg_arrays.insert_sql(table, columns, tail),
                                pg_arrays.arrays(rows, len(columns))))
        sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES {{}} ON CONFLICT DO NOTHING"
        if returning:
            return (yield from insert_returning(sql, rows, returning))
        yield Many(sql.format("(" + marks(len(columns)) + ")"), rows)
        return []

    def update_rows(self, table: sa.Table, columns: tuple[str, ...], key: str,
                    rows: Sequence[Sequence[Any]]) -> Steps[None]:
        """UPDATE table SET columns WHERE `key` matches, each row being [*values, key] and a
        key appearing once: over arrays or by executemany, as insert_new."""
        if not rows:
            return
        if self._dialect.row_arrays:
            yield Fetch(pg_arrays.update_sql(table, columns, key),
                        pg_arrays.arrays(rows, len(columns) + 1))
            return
        assignments = ", ".join(f"{c} = ?" for c in columns)
        yield Many(f"UPDATE {table.name} SET {assignments} WHERE {key} = ?", rows)

    def exclusive_keys(self, keys: list[int]) -> Steps[None]:
        """Hold every lock of `keys` until the transaction ends, taken in the list's order."""
        if self._dialect.keys_sql and keys:
            yield Fetch(self._dialect.keys_sql, [keys])


def marks(n: int) -> str:
    return ",".join("?" * n)


def _distinct_sorted(values: Iterable[Any]) -> list[Any]:
    return sorted(values if isinstance(values, set | frozenset) else set(values))


def fetch_in(sql: str, values: Iterable[Any]) -> Steps[Rows]:
    """`sql` holds `{0}` (once or more) where the same IN list goes."""
    rows: Rows = []
    uses = sql.count("{0}") or sql.count("{}")
    for part in chunks(_distinct_sorted(values), IN_CHUNK // max(1, uses)):
        rows += yield Fetch(sql.format(marks(len(part))), part * uses)
    return rows


def execute_in(sql: str, values: Iterable[Any], *params: Any) -> Steps[None]:
    """`sql` holds `{}` for the IN list, after any `params`."""
    for part in chunks(_distinct_sorted(values), IN_CHUNK - len(params)):
        yield Fetch(sql.format(marks(len(part))), [*params, *part])


def insert_returning(sql: str, rows: Sequence[Sequence[Any]], returning: str) -> Steps[Rows]:
    """A multi-row INSERT per slice (one round trip each), with RETURNING; `sql` holds `{}`
    where the VALUES rows go."""
    out: Rows = []
    if not rows:
        return out
    group = "(" + marks(len(rows[0])) + ")"
    per = max(1, min(1000, 30_000 // len(rows[0])))  # both backends take 32,766 parameters
    for start in range(0, len(rows), per):
        part = rows[start:start + per]
        flat = [v for row in part for v in row]
        out += yield Fetch(sql.format(",".join([group] * len(part))) + " RETURNING " + returning,
                           flat)
    return out


def many(sql: str, rows: Sequence[Sequence[Any]]) -> Steps[None]:
    if rows:
        yield Many(sql, rows)


def run_sync(plan: Steps[T], conn: sqlite3.Connection) -> T:
    """The plan on a plain sqlite3 connection, from that connection's own thread."""
    try:
        step = next(plan)
        while True:
            if isinstance(step, Fetch):
                rows: Rows = conn.execute(step.sql, step.params).fetchall()
            else:
                conn.executemany(step.sql, step.rows)
                rows = []
            step = plan.send(rows)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


@lru_cache(maxsize=512)
def _dollar(sql: str) -> str:
    counter = iter(range(1, 100_000))
    return re.sub(r"\?", lambda _: f"${next(counter)}", sql)


async def _on_asyncpg(driver: Any, step: Step) -> Rows:
    if isinstance(step, Fetch):
        return [tuple(r) for r in await driver.fetch(_dollar(step.sql), *step.params)]
    await driver.executemany(_dollar(step.sql), step.rows)
    return []


async def _on_aiosqlite(driver: Any, step: Step) -> Rows:
    if isinstance(step, Fetch):
        cursor = await driver.execute(step.sql, step.params)
        rows = [tuple(r) for r in await cursor.fetchall()]
        await cursor.close()
        return rows
    await driver.executemany(step.sql, step.rows)
    return []


class _Driver(NamedTuple):
    sql: Callable[[str], str]  # the fast path's `?` SQL in the driver's paramstyle
    run: Callable[[Any, Step], Awaitable[Rows]]


_DRIVERS = {"postgresql": _Driver(_dollar, _on_asyncpg),
            "sqlite": _Driver(str, _on_aiosqlite)}


async def _through_sqlalchemy(conn: AsyncConnection, driver: _Driver, step: Step) -> Rows:
    if isinstance(step, Fetch):
        result = await conn.exec_driver_sql(driver.sql(step.sql), tuple(step.params))
        return [tuple(r) for r in result] if result.returns_rows else []
    await conn.exec_driver_sql(driver.sql(step.sql), [tuple(r) for r in step.rows])
    return []


async def run_async(plan: Steps[T], conn: AsyncConnection) -> T:
    """The plan on the driver under `conn`'s open transaction, from the event loop: asyncpg
    (PostgreSQL's intake) or aiosqlite (an import on SQLite, off the intake's path).

    The first step goes through `conn` itself: SQLAlchemy's asyncpg adapter sends BEGIN
    only before a statement of its own, so steps sent straight to the driver before one
    would each commit alone (and release their transaction-scoped locks at once)."""
    raw: Any = (await conn.get_raw_connection()).driver_connection
    driver = _DRIVERS[conn.dialect.name]
    try:
        step = next(plan)
        step = plan.send(await _through_sqlalchemy(conn, driver, step))
        while True:
            step = plan.send(await driver.run(raw, step))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
