"""The driver connection under an open SQLAlchemy transaction, for the intake's hot path.

Statement compilation and per-row type processing cost more than the database work for the
small, many rows the intake writes; here SQL is written once with `?` placeholders (turned
into `$n` for asyncpg) and values are converted by hand. Everything else uses SQLAlchemy."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from storage.sqlutil import chunks

# How SQLAlchemy's DateTime stores values on SQLite (naive UTC text, fixed width, so it sorts).
SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"


# Batches repeat the same instants (a batch's arrival time, bulk-imported timestamps): small
# caches of the conversions both ways pay for themselves.
_TEXT: dict[datetime, str] = {}
_TIMES: dict[str, datetime] = {}


def _remember(cache: dict[Any, Any], key: Any, value: Any) -> Any:
    if len(cache) >= 4096:
        cache.clear()
    cache[key] = value
    return value


@lru_cache(maxsize=256)
def _dollar(sql: str) -> str:
    counter = iter(range(1, 100_000))
    return re.sub(r"\?", lambda _: f"${next(counter)}", sql)


class RawSQL:
    def __init__(self, driver: Any, dialect: str) -> None:
        self._driver = driver
        self.sqlite = dialect == "sqlite"

    @classmethod
    async def of(cls, conn: AsyncConnection) -> RawSQL:
        fairy = await conn.get_raw_connection()
        return cls(fairy.driver_connection, conn.dialect.name)

    # --- values -------------------------------------------------------------------------
    def ts(self, value: datetime | None) -> Any:
        if value is None or not self.sqlite:
            return value
        text = _TEXT.get(value)
        if text is None:
            utc = value if value.tzinfo is UTC else value.astimezone(UTC)
            # The same text as strftime(SQLITE_TIME), several times faster.
            text = _remember(_TEXT, value, utc.isoformat(" ", "microseconds")[:26])
        return text

    def dt(self, value: Any) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, datetime):
            return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        parsed = _TIMES.get(value)
        if parsed is None:
            parsed = _remember(_TIMES, value, datetime.fromisoformat(value).replace(tzinfo=UTC))
        return parsed

    def flag(self, value: bool) -> Any:
        return int(value) if self.sqlite else value

    # --- statements ---------------------------------------------------------------------
    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self.sqlite:
            cursor = await self._driver.execute(sql, params)
            rows = await cursor.fetchall()
            await cursor.close()
            return [tuple(r) for r in rows]
        return [tuple(r) for r in await self._driver.fetch(_dollar(sql), *params)]

    async def fetch_in(self, sql: str, values: Iterable[Any]) -> list[tuple[Any, ...]]:
        """`sql` holds `{0}` (once or more) where the same IN list goes."""
        rows: list[tuple[Any, ...]] = []
        uses = sql.count("{0}") or sql.count("{}")
        for part in chunks(sorted(set(values)), 2000 // max(1, uses)):
            marks = ",".join("?" * len(part))
            rows += await self.fetch(sql.format(marks), part * uses)
        return rows

    async def insert_returning(self, sql: str, rows: Sequence[Sequence[Any]],
                               returning: str) -> list[tuple[Any, ...]]:
        """One multi-row INSERT per slice (a single round trip), with RETURNING."""
        out: list[tuple[Any, ...]] = []
        if not rows:
            return out
        width = len(rows[0])
        group = "(" + ",".join("?" * width) + ")"
        for start in range(0, len(rows), 1000):
            part = rows[start:start + 1000]
            values = ",".join([group] * len(part))
            flat = [v for row in part for v in row]
            out += await self.fetch(sql.format(values) + " RETURNING " + returning, flat)
        return out

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        if self.sqlite:
            await self._driver.executemany(sql, rows)
        else:
            await self._driver.executemany(_dollar(sql), rows)

    async def execute_in(self, sql: str, values: Iterable[Any]) -> None:
        for part in chunks(sorted(set(values))):
            await self.fetch(sql.format(",".join("?" * len(part))), part)
