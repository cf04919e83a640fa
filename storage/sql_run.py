"""Running a plan of SQL steps (storage.sql_steps) on a connection.

`run_sync` drives it on a plain sqlite3 connection, from that connection's own thread;
`run_async` drives it on the driver connection under an open SQLAlchemy transaction
(asyncpg or aiosqlite), with `?` turned into `$n` for asyncpg."""

from __future__ import annotations

import re
import sqlite3
from functools import lru_cache
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from storage.sql_steps import Fetch, Rows, Steps

T = TypeVar("T")


def run_sync(plan: Steps[T], conn: sqlite3.Connection) -> T:
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


async def run_async(plan: Steps[T], conn: AsyncConnection) -> T:
    fairy = await conn.get_raw_connection()
    driver: Any = fairy.driver_connection
    sqlite = conn.dialect.name == "sqlite"
    try:
        step = next(plan)
        while True:
            rows: Rows = []
            if isinstance(step, Fetch) and sqlite:
                cursor = await driver.execute(step.sql, step.params)
                rows = [tuple(r) for r in await cursor.fetchall()]
                await cursor.close()
            elif isinstance(step, Fetch):
                rows = [tuple(r) for r in await driver.fetch(_dollar(step.sql), *step.params)]
            else:
                await driver.executemany(step.sql if sqlite else _dollar(step.sql), step.rows)
            step = plan.send(rows)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
