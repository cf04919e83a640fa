"""Sync-back progress in the store: the one-syncer lease, what is left to send, checkpoints."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

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


async def pending_answers(db: Database, limit: int) -> list[PendingAnswer]:
    async with db.read() as conn:
        rows = await conn.execute(
            sa.select(SURVEYS.c.id, SURVEYS.c.user_id, SURVEYS.c.score, SURVEYS.c.comment,
                      SURVEYS.c.answered_at, SURVEYS.c.answer_revision)
            .where(SURVEYS.c.needs_sync.is_(True), SURVEYS.c.score.is_not(None))
            .order_by(SURVEYS.c.answered_at, SURVEYS.c.id).limit(limit))
        return [PendingAnswer(r[0], r[1], int(r[2]), r[3] or "", utc(r[4]) or datetime.min,
                              int(r[5])) for r in rows]


async def newest_answer_ids(db: Database, user_ids: list[str]) -> dict[str, int]:
    """Per user, the survey holding the newest answer: only it may set the NPS traits."""
    newest: dict[str, tuple[datetime, int]] = {}
    async with db.read() as conn:
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
    out: dict[str, list[str]] = {}
    async with db.read() as conn:
        for part in chunks(user_ids):
            for row in await conn.execute(
                sa.select(MEMBERSHIPS.c.user_id, MEMBERSHIPS.c.group_id)
                .where(MEMBERSHIPS.c.user_id.in_(part), MEMBERSHIPS.c.active.is_(True))):
                out.setdefault(str(row[0]), []).append(str(row[1]))
    return out


async def mark_synced(db: Database, revisions: list[tuple[int, int]]) -> None:
    """Checkpoint: these (survey id, revision) pairs reached Segment (or were refused)."""
    if not revisions:
        return
    async with db.write() as conn:
        await conn.execute(
            sa.update(SURVEYS).where(SURVEYS.c.id == sa.bindparam("sid"))
            .values(synced_revision=sa.bindparam("rev"),
                    needs_sync=SURVEYS.c.answer_revision > sa.bindparam("rev2")),
            [{"sid": s, "rev": r, "rev2": r} for s, r in revisions])


async def record_failures(db: Database, now: datetime, failures: list[dict[str, Any]]) -> None:
    if failures:
        async with db.write() as conn:
            await conn.execute(sa.insert(SYNC_FAILURES),
                               [{"at": now, **f} for f in failures])


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
