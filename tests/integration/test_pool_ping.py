"""A pooled PostgreSQL connection is tested only after it sat idle (storage/pool_ping.py):
one that died meanwhile is replaced before a transaction meets it, and a busy pool pays no
ping per checkout."""

from __future__ import annotations

import asyncpg
import pytest
import sqlalchemy as sa

from storage import pool_ping
from storage.db import Database, StoreUnavailable

pytestmark = pytest.mark.postgres


async def _backend_pid(db: Database) -> int:
    async with db.read() as conn:
        return int((await conn.execute(sa.select(sa.func.pg_backend_pid()))).scalar_one())


async def _terminate(url: str, pid: int) -> None:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await conn.close()


async def test_an_idle_connection_that_died_is_replaced_before_use(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool_ping, "IDLE_S", 0.0)  # every handed-back connection is "idle"
    db = Database(pg_url)
    try:
        first = await _backend_pid(db)
        await _terminate(pg_url, first)
        assert await _backend_pid(db) != first  # a new connection, and no error
    finally:
        await db.close()


async def test_a_connection_just_handed_back_is_not_pinged(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool_ping, "IDLE_S", 60.0)
    db = Database(pg_url)
    try:
        first = await _backend_pid(db)
        await _terminate(pg_url, first)
        # Not tested at checkout: the transaction meets the dead connection and fails...
        with pytest.raises(StoreUnavailable):  # what the daemon answers 503 for
            await _backend_pid(db)
        # ...and the pool gives the next one a new connection.
        assert await _backend_pid(db) != first
    finally:
        await db.close()
