"""Sync-back progress in the store: the one-syncer lease, what is left to send, checkpoints."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.db import Database, utc
from storage.sqlutil import MEMBERSHIPS, SURVEYS, SYNC_FAILURES, SYNC_STATE, USERS, chunks


@dataclass(frozen=True)
class PendingAnswer:
    survey_id: int
    user_id: str
    score: int
    comment: str
    answered_at: datetime
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
    newest: dict[str, int]  # per user, the survey holding the newest answer
    accounts: dict[str, list[str]]  # per user, active accounts (when asked for)


async def pending_chunk(db: Database, limit: int, after_id: int, *,
                        with_accounts: bool) -> PendingChunk:
    """The next ``limit`` answers to sync with id above ``after_id``, with what shapes them.

    Keyset pagination in id order: served by the needs_sync index without a sort (in
    SQLite an index ends with the rowid, here the id), so every chunk costs the same
    however long the backlog; and a chunk can be read before the previous one is
    checkpointed.
    """
    async with db.read() as conn:
        rows = await conn.execute(
            sa.select(SURVEYS.c.id, SURVEYS.c.user_id, SURVEYS.c.score, SURVEYS.c.comment,
                      SURVEYS.c.answered_at, SURVEYS.c.answer_revision)
            .where(SURVEYS.c.needs_sync.is_(True), SURVEYS.c.id > after_id,
                   SURVEYS.c.score.is_not(None))
            .order_by(SURVEYS.c.id).limit(limit))
        answers = [PendingAnswer(r[0], r[1], int(r[2]), r[3] or "", utc(r[4]) or datetime.min,
                                 int(r[5])) for r in rows]
        users = sorted({a.user_id for a in answers})
        newest = await _newest_answer_ids(conn, users)
        accounts = await _accounts_of(conn, users) if with_accounts else {}
    return PendingChunk(answers, newest, accounts)


async def pending_answers(db: Database, limit: int, after_id: int = 0) -> list[PendingAnswer]:
    return (await pending_chunk(db, limit, after_id, with_accounts=False)).answers


async def newest_answer_ids(db: Database, user_ids: list[str]) -> dict[str, int]:
    """Per user, the survey holding the newest answer: only it may set the NPS traits."""
    async with db.read() as conn:
        return await _newest_answer_ids(conn, user_ids)


async def _newest_answer_ids(conn: AsyncConnection, user_ids: list[str]) -> dict[str, int]:
    newest: dict[str, tuple[datetime, int]] = {}
    for part in chunks(user_ids):
        rows = await conn.execute(
            sa.select(SURVEYS.c.user_id, SURVEYS.c.answered_at, SURVEYS.c.id)
            .where(SURVEYS.c.user_id.in_(part), SURVEYS.c.score.is_not(None)))
        for row in rows:
            user_id, survey_id = str(row[0]), int(row[2])
            key = (utc(row[1]) or datetime.min, survey_id)
            if user_id not in newest or key > newest[user_id]:
                newest[user_id] = key
    return {u: v[1] for u, v in newest.items()}


async def accounts_of(db: Database, user_ids: list[str]) -> dict[str, list[str]]:
    async with db.read() as conn:
        return await _accounts_of(conn, user_ids)


async def _accounts_of(conn: AsyncConnection, user_ids: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for part in chunks(user_ids):
        for row in await conn.execute(
            sa.select(MEMBERSHIPS.c.user_id, MEMBERSHIPS.c.group_id)
            .where(MEMBERSHIPS.c.user_id.in_(part), MEMBERSHIPS.c.active.is_(True))):
            out.setdefault(str(row[0]), []).append(str(row[1]))
    return out


async def checkpoint(db: Database, revisions: list[tuple[int, int]],
                     failures: list[dict[str, Any]], now: datetime, owner: str,
                     lease: timedelta) -> None:
    """After Segment settled a batch: its refused messages recorded, its answer revisions
    marked synced and the lease renewed, in one transaction (one commit per batch)."""
    async with db.write() as conn:
        await _record_failures(conn, now, failures)
        await _mark_synced(conn, revisions)
        await conn.execute(
            sa.update(SYNC_STATE).where(SYNC_STATE.c.id == 1, SYNC_STATE.c.holder == owner)
            .values(lease_until=now + lease))


async def mark_synced(db: Database, revisions: list[tuple[int, int]]) -> None:
    """Checkpoint: these (survey id, revision) pairs reached Segment (or were refused)."""
    if revisions:
        async with db.write() as conn:
            await _mark_synced(conn, revisions)


async def _mark_synced(conn: AsyncConnection, revisions: list[tuple[int, int]]) -> None:
    # One statement per revision number (nearly always just 1) and chunk of ids.
    by_revision: dict[int, list[int]] = {}
    for survey_id, revision in revisions:
        by_revision.setdefault(revision, []).append(survey_id)
    for revision, ids in sorted(by_revision.items()):
        for part in chunks(ids):
            await conn.execute(
                sa.update(SURVEYS).where(SURVEYS.c.id.in_(part))
                .values(synced_revision=revision,
                        needs_sync=SURVEYS.c.answer_revision > revision))


async def record_failures(db: Database, now: datetime, failures: list[dict[str, Any]]) -> None:
    if failures:
        async with db.write() as conn:
            await _record_failures(conn, now, failures)


async def _record_failures(conn: AsyncConnection, now: datetime,
                           failures: list[dict[str, Any]]) -> None:
    if failures:
        await conn.execute(sa.insert(SYNC_FAILURES), [{"at": now, **f} for f in failures])


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
