"""Sync-back progress in the store: the one-syncer lease, what is left to send, checkpoints."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.db import Database, utc
from storage.sqlutil import MEMBERSHIPS, SURVEYS, SYNC_FAILURES, SYNC_STATE, USERS, chunks


class PendingAnswer(NamedTuple):
    survey_id: int
    user_id: str
    score: int
    comment: str
    answered_at: datetime  # UTC: naive as SQLite gives it back, aware from PostgreSQL
    revision: int


async def acquire_lease(db: Database, owner: str, now: datetime, lease: timedelta) -> bool:
    """One syncer at a time, across processes: a lease row any backend can hold."""
    async with db.write() as conn:
        result = await conn.execute(
            sa.update(SYNC_STATE)
            .where(SYNC_STATE.c.id == 1,
                   sa.or_(SYNC_STATE.c.holder.is_(None), SYNC_STATE.c.holder == owner,
                          SYNC_STATE.c.lease_until < now))
            .values(holder=owner, lease_until=now + lease, last_started_at=now))
        return bool(result.rowcount)


async def holder(db: Database) -> str | None:
    async with db.read() as conn:
        row = (await conn.execute(sa.select(SYNC_STATE.c.holder))).first()
    return None if row is None or row[0] is None else str(row[0])


async def break_lease(db: Database, dead_holder: str) -> None:
    """Free the lease of a holder known to be dead."""
    async with db.write() as conn:
        await conn.execute(sa.update(SYNC_STATE)
                           .where(SYNC_STATE.c.id == 1, SYNC_STATE.c.holder == dead_holder)
                           .values(holder=None, lease_until=None, last_result="interrupted"))


async def renew_lease(db: Database, owner: str, now: datetime, lease: timedelta) -> bool:
    async with db.write() as conn:
        result = await conn.execute(
            sa.update(SYNC_STATE).where(SYNC_STATE.c.id == 1, SYNC_STATE.c.holder == owner)
            .values(lease_until=now + lease))
        return bool(result.rowcount)


async def release_lease(db: Database, owner: str, now: datetime, result: str, sent: int,
                        failed: int) -> None:
    values: dict[str, Any] = {"holder": None, "lease_until": None, "last_finished_at": now,
                              "last_result": result, "last_sent": sent, "last_failed": failed}
    if result == "ok":
        values["last_success_at"] = now
    async with db.write() as conn:
        await conn.execute(sa.update(SYNC_STATE)
                           .where(SYNC_STATE.c.id == 1, SYNC_STATE.c.holder == owner)
                           .values(**values))


async def last_sync(db: Database) -> tuple[datetime | None, datetime | None]:
    """(last started, last succeeded)."""
    async with db.read() as conn:
        row = (await conn.execute(sa.select(SYNC_STATE.c.last_started_at,
                                            SYNC_STATE.c.last_success_at))).first()
    return (utc(row[0]), utc(row[1])) if row is not None else (None, None)


@dataclass(frozen=True)
class PendingChunk:
    answers: list[PendingAnswer]
    # Per user with more than one answer, the survey holding the newest; a user missing
    # here has one answer only, so the one in ``answers`` is the newest.
    newest: dict[str, int]
    accounts: dict[str, list[str]]  # per user, active accounts (when asked for)


async def pending_chunk(db: Database, limit: int, after_id: int, *,
                        with_accounts: bool) -> PendingChunk:
    """The next ``limit`` answers to sync with id above ``after_id``, with what shapes them.

    Keyset pagination in id order: served by the needs_sync index without a sort (in
    SQLite an index ends with the rowid, here the id), so every chunk costs the same
    however long the backlog; and a chunk can be read before the previous one is
    checkpointed. The users' other answers and accounts are found by a subquery over the
    same id range rather than a list of bound user ids.
    """
    async with db.read() as conn:
        rows: Sequence[Any] = (await conn.execute(
            sa.select(SURVEYS.c.id, SURVEYS.c.user_id, SURVEYS.c.score,
                      sa.func.coalesce(SURVEYS.c.comment, ""), SURVEYS.c.answered_at,
                      SURVEYS.c.answer_revision)
            .where(_PENDING, SURVEYS.c.id > after_id)
            .order_by(SURVEYS.c.id).limit(limit))).all()
        if not rows:
            return PendingChunk([], {}, {})
        answers = [PendingAnswer(sid, user, score, comment,
                                 datetime.min if at is None else at, rev)
                   for sid, user, score, comment, at, rev in rows]
        users = (sa.select(SURVEYS.c.user_id)
                 .where(_PENDING, SURVEYS.c.id > after_id, SURVEYS.c.id <= answers[-1].survey_id))
        newest = await _newest_answer_ids(conn, users)
        accounts = await _accounts_of(conn, users) if with_accounts else {}
    return PendingChunk(answers, newest, accounts)


_PENDING = sa.and_(SURVEYS.c.needs_sync.is_(True), SURVEYS.c.score.is_not(None))


async def _newest_answer_ids(conn: AsyncConnection, users: sa.Select[Any]) -> dict[str, int]:
    """Per user with several answers, the survey holding the newest: only it may set the
    NPS traits. (Most users have one answer: the database leaves them out.)"""
    answered = SURVEYS.c.score.is_not(None)
    several = (sa.select(SURVEYS.c.user_id).where(SURVEYS.c.user_id.in_(users), answered)
               .group_by(SURVEYS.c.user_id).having(sa.func.count() > 1))
    newest: dict[str, tuple[bool, datetime | None, int]] = {}
    rows: Sequence[Any] = (await conn.execute(
        sa.select(SURVEYS.c.user_id, SURVEYS.c.answered_at, SURVEYS.c.id)
        .where(SURVEYS.c.user_id.in_(several), answered))).all()
    for user_id, at, survey_id in rows:
        # One column, so the times are all naive (SQLite) or all aware; no time is oldest.
        key = (at is not None, at, survey_id)
        best = newest.get(user_id)
        if best is None or key > best:
            newest[user_id] = key
    return {u: v[2] for u, v in newest.items()}


async def _accounts_of(conn: AsyncConnection, users: sa.Select[Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    rows: Sequence[Any] = (await conn.execute(
        sa.select(MEMBERSHIPS.c.user_id, MEMBERSHIPS.c.group_id)
        .where(MEMBERSHIPS.c.user_id.in_(users), MEMBERSHIPS.c.active.is_(True)))).all()
    for user_id, group_id in rows:
        out.setdefault(user_id, []).append(group_id)
    return out


async def checkpoint(db: Database, revisions: list[tuple[int, int]],
                     failures: list[dict[str, Any]], now: datetime,
                     renew: tuple[str, timedelta] | None = None) -> None:
    """After Segment settled a batch: its refused messages recorded and its answer revisions
    marked synced, in one transaction; with ``renew`` (owner, lease) the lease too."""
    async with db.write() as conn:
        await _record_failures(conn, now, failures)
        await _mark_synced(conn, revisions)
        if renew is not None:
            owner, lease = renew
            await conn.execute(
                sa.update(SYNC_STATE).where(SYNC_STATE.c.id == 1, SYNC_STATE.c.holder == owner)
                .values(lease_until=now + lease))


def _ids_in(ids: list[int]) -> sa.ColumnElement[bool]:
    """surveys.id IN (…), the integers written into the statement: binding a thousand
    parameters one by one costs more than the update itself."""
    return SURVEYS.c.id.in_(sa.bindparam("b_ids", [int(i) for i in ids], expanding=True,
                                         literal_execute=True))


async def _mark_synced(conn: AsyncConnection, revisions: list[tuple[int, int]]) -> None:
    # One statement per revision number (nearly always just 1) and chunk of ids.
    by_revision: dict[int, list[int]] = {}
    for survey_id, revision in revisions:
        by_revision.setdefault(revision, []).append(survey_id)
    for revision, ids in sorted(by_revision.items()):
        for part in chunks(ids):
            await conn.execute(
                sa.update(SURVEYS).where(_ids_in(part))
                .values(synced_revision=revision,
                        needs_sync=SURVEYS.c.answer_revision > revision))


async def _record_failures(conn: AsyncConnection, now: datetime,
                           failures: list[dict[str, Any]]) -> None:
    if not failures:
        return
    # A failure of an answer erased meanwhile is not recorded: it would keep the user id.
    alive = await _existing(conn, {int(f["survey_id"]) for f in failures})
    rows = [{"at": now, **f} for f in failures if f["survey_id"] in alive]
    if rows:
        await conn.execute(sa.insert(SYNC_FAILURES), rows)


async def _existing(conn: AsyncConnection, ids: set[int]) -> set[int]:
    found: set[int] = set()
    for part in chunks(sorted(ids)):
        found.update(int(r[0]) for r in await conn.execute(
            sa.select(SURVEYS.c.id).where(_ids_in(part))))
    return found


async def existing_surveys(db: Database, ids: set[int]) -> set[int]:
    """Which of these surveys still exist (an erasure deletes a person's surveys)."""
    async with db.read() as conn:
        return await _existing(conn, ids)


async def pending_unsubscribes(db: Database, limit: int) -> list[tuple[str, datetime]]:
    async with db.read() as conn:
        rows = await conn.execute(
            sa.select(USERS.c.user_id, USERS.c.unsubscribed_at)
            .where(USERS.c.unsubscribe_synced.is_(False), USERS.c.unsubscribed_at.is_not(None))
            .order_by(USERS.c.user_id).limit(limit))
        return [(r[0], utc(r[1]) or datetime.min) for r in rows]


async def mark_unsubscribes_synced(db: Database, user_ids: list[str]) -> None:
    if user_ids:
        async with db.write() as conn:
            for part in chunks(user_ids):
                await conn.execute(sa.update(USERS).where(USERS.c.user_id.in_(part))
                                   .values(unsubscribe_synced=True))
