"""The SQLite intake writer's own connection, on its own thread.

The group committer (storage/group_commit.py) runs whole groups of intake requests as
plain sqlite3 transactions in this thread, so a group commit is one thread hop and no
statement compilation. The connection is opened here, with the pragmas of every npsd
writer (storage.dialect.sqlite_pragmas: WAL, synchronous=FULL, busy timeout,
secure_delete, the automatic checkpoint), and every transaction begins with BEGIN
IMMEDIATE. A transaction that failed may leave the connection in any state: the
connection is then closed and the next group opens a fresh one.

One thread (a ThreadPoolExecutor of one worker): a sqlite3 connection is used only by the
thread that made it, and the sqlite3 module lets go of the GIL while SQLite works.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from storage.dialect import sqlite_pragmas
from storage.fast_path import Steps, run_sync

T = TypeVar("T")


class SqliteWriter:
    def __init__(self, path: str | None) -> None:
        self._path = path  # None: an in-memory database, which this connection cannot share
        self._thread: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None  # used in the writer thread only

    async def run(self, work: Callable[[sqlite3.Connection], bool]) -> None:
        """Call `work` with the connection, in the writer thread. `work` runs its own
        transactions and returns False when one failed: the connection is then replaced.
        Raises sqlite3.Error when no connection could be opened."""
        if self._thread is None:
            self._thread = ThreadPoolExecutor(max_workers=1,
                                              thread_name_prefix="npsd-intake-writer")
        await asyncio.get_running_loop().run_in_executor(self._thread, self._call, work)

    def _call(self, work: Callable[[sqlite3.Connection], bool]) -> None:
        conn = self._conn = self._conn or _connect(self._path)
        healthy = False
        try:
            healthy = work(conn)
        finally:
            if not healthy:
                self._drop()

    def _drop(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()

    async def close(self) -> None:
        if self._thread is not None:
            thread, self._thread = self._thread, None
            await asyncio.get_running_loop().run_in_executor(thread, self._drop)
            thread.shutdown(wait=True)


def _connect(path: str | None) -> sqlite3.Connection:
    if path is None:
        raise sqlite3.OperationalError("the intake writer needs a database file; "
                                       "storage.url names an in-memory database")
    conn = sqlite3.connect(path, timeout=10, isolation_level=None)
    try:
        sqlite_pragmas(conn, writer=True)
    except BaseException:
        conn.close()
        raise
    return conn


def run_transaction(conn: sqlite3.Connection, steps: Steps[T], *, write: bool = True) -> T:
    """In the writer thread: the steps as one BEGIN IMMEDIATE transaction (or, not to
    `write`, a deferred one that takes no write lock: a read that sees one snapshot)."""
    conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
    try:
        result = run_sync(steps, conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result
