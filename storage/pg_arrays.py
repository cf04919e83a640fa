"""PostgreSQL: many rows in one statement, passed as one array per column (unnest).

executemany sends one statement per row, and a multi-row VALUES list is a new, long
statement to parse and plan for every batch size; the server spent 75-85 us per row on
either (2,000-row intake groups: ~170 ms per UPDATE of the users, ~75 ms per 1,000 events
inserted). One statement over arrays is planned once and runs set-based.

The SQL text only: the fast path (storage/fast_path.py, Values.insert_new and
Values.update_rows) sends it where the Dialect's row_arrays says so. SQLite keeps
executemany and VALUES lists: in-process, they cost no round trips.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]


@lru_cache(maxsize=64)
def _source(table: sa.Table, columns: tuple[str, ...]) -> str:
    """`unnest(?::T1[], ...) AS v("c1", ...)` for these columns of the table."""
    casts = ", ".join(f"?::{table.c[c].type.compile(dialect=_DIALECT)}[]" for c in columns)
    names = ", ".join(f'"{c}"' for c in columns)
    return f"unnest({casts}) AS v({names})"


def arrays(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """The rows as one list per column: the statements' parameters."""
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[]] * width


@lru_cache(maxsize=64)
def insert_sql(table: sa.Table, columns: tuple[str, ...], tail: str = "") -> str:
    """INSERT INTO table (columns) the arrays' rows, then `tail` (ON CONFLICT, RETURNING)."""
    names = ", ".join(f'"{c}"' for c in columns)
    return f"INSERT INTO {table.name} ({names}) SELECT * FROM {_source(table, columns)} {tail}"


@lru_cache(maxsize=64)
def update_sql(table: sa.Table, columns: tuple[str, ...], key: str) -> str:
    """UPDATE table SET columns WHERE key matches, each row being [*values, key]."""
    sets = ", ".join(f'"{c}" = v."{c}"' for c in columns)
    return (f"UPDATE {table.name} SET {sets} FROM {_source(table, (*columns, key))} "
            f'WHERE {table.name}."{key}" = v."{key}"')
