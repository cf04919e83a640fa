"""The fast path's plans run as one transaction on both backends (storage/fast_path.py
run_async): a plan that fails midway leaves nothing committed, and a transaction-scoped
lock taken by a step is still held by the steps after it.

On PostgreSQL this is not given: SQLAlchemy's asyncpg adapter sends BEGIN only before a
statement of its own, so steps sent straight to the driver before one each committed
alone (an import's book lock was released at once, its rows committed one by one)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from storage.book_locks import BOOK_KEY, BookLocks
from storage.db import Database
from storage.fast_path import Fetch, Many, Steps, Values, run_async
from storage.migrations import migrate

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
_INSERT = "INSERT INTO events (message_id, received_at, type) VALUES (?, ?, ?)"


class Planted(Exception):
    pass


def _fails_midway(v: Values) -> Steps[None]:
    yield Fetch(_INSERT, ("m-1", v.ts(NOW), "track"))
    yield Many(_INSERT, [("m-2", v.ts(NOW), "track"), ("m-3", v.ts(NOW), "track")])
    yield Fetch("SELECT count(*) FROM events")
    raise Planted("the plan fails after three rows were written")


async def _events(db: Database) -> list[str]:
    async with db.read() as conn:
        return sorted(r[0] for r in await conn.execute(sa.text("SELECT message_id FROM events")))


async def test_a_plan_that_fails_midway_commits_nothing(db_url: str) -> None:
    db = Database(db_url)
    try:
        await migrate(db, NOW)
        with pytest.raises(Planted):
            async with db.write() as conn:
                await run_async(_fails_midway(Values(db.dialect, NOW)), conn)
        assert await _events(db) == []
        # The same steps without the failure commit all three rows together.
        def succeeds(v: Values) -> Steps[int]:
            yield Fetch(_INSERT, ("m-1", v.ts(NOW), "track"))
            yield Many(_INSERT, [("m-2", v.ts(NOW), "track"), ("m-3", v.ts(NOW), "track")])
            rows = yield Fetch("SELECT count(*) FROM events")
            return int(rows[0][0])

        async with db.write() as conn:
            assert await run_async(succeeds(Values(db.dialect, NOW)), conn) == 3
        assert await _events(db) == ["m-1", "m-2", "m-3"]
    finally:
        await db.close()


_HELD = ("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
         "AND pid = pg_backend_pid()")


def _locks_then_looks(v: Values) -> Steps[list[int]]:
    seen = []
    yield from v.exclusive(BOOK_KEY)
    seen.append(int((yield Fetch(_HELD))[0][0]))
    locks = BookLocks(v)
    assert (yield from locks.lock(users=["u1", "u2"], accounts=["g1"]))
    assert not (yield from locks.lock(users=["u2"]))  # held already: no statement
    seen.append(int((yield Fetch(_HELD))[0][0]))
    return seen


@pytest.mark.postgres
async def test_locks_taken_by_steps_last_until_the_commit(pg_url: str) -> None:
    db = Database(pg_url)
    try:
        await migrate(db, NOW)
        async with db.write() as conn:
            held = await run_async(_locks_then_looks(Values(db.dialect, NOW)), conn)
        assert held == [1, 4]  # the book's key, then it and the three keys of the batch
        async with db.write() as conn:  # and all released by the commit
            assert (await conn.execute(sa.text(_HELD))).scalar() == 0
    finally:
        await db.close()


@pytest.mark.postgres
async def test_intakes_share_the_book_key_that_an_import_takes_alone(pg_url: str) -> None:
    db = Database(pg_url)
    other = Database(pg_url)

    def share(v: Values) -> Steps[None]:
        yield from BookLocks(v).share_book()

    def try_lock(sql: str) -> Steps[bool]:
        return bool((yield Fetch(sql, [BOOK_KEY]))[0][0])

    try:
        await migrate(db, NOW)
        async with db.write() as intake:
            await run_async(share(Values(db.dialect, NOW)), intake)
            async with other.write() as conn:  # another intake: shares it
                assert await run_async(try_lock(
                    "SELECT pg_try_advisory_xact_lock_shared(?)"), conn)
            async with other.write() as conn:  # an import (Values.exclusive): waits
                assert not await run_async(try_lock("SELECT pg_try_advisory_xact_lock(?)"),
                                           conn)
        async with other.write() as conn:  # the intake committed: the import may go
            assert await run_async(try_lock("SELECT pg_try_advisory_xact_lock(?)"), conn)
    finally:
        await other.close()
        await db.close()
