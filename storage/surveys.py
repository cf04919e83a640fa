"""The survey outbox: claiming due surveys, the at-most-once hand-off, and the outcomes.

States: pending → sending (claimed, leased) → sent → answered / expired; or skipped,
cancelled, failed. A claim is only leased until the dispatcher starts its survey's own SMTP
transaction: `handoff_at` is set, and committed, just before that (jobs.handoff groups these
marks of all connections, with the outcomes of the messages before them, into one commit).
A claim whose lease ran out with handoff_at set is never sent again (at most once) and is
recorded failed "interrupted"; one without it goes back to pending for any process to take.
A reminder is claimed the same way while its survey stays "sent": `reminder_sent_at` is its
hand-off mark, and its outcome clears `reminder_due_at`; a dead holder's unmarked reminder
claims are free again at once, its marked ones are recorded interrupted.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.db import Database, utc
from storage.dialect import Dialect
from storage.fast_path import Values, run_async
from storage.nps_totals import Counted, record_change
from storage.sqlutil import DECISIONS, MEMBERSHIPS, SUPPRESSIONS, SURVEYS, USERS, chunks
from storage.states import SurveyState

TZ = SURVEYS.c.due_at.type
INTERRUPTED = ("interrupted: npsd stopped during this survey's SMTP transaction, so the mail "
               "server may or may not have it; not sent again (at most once)")
INTERRUPTED_REMINDER = ("interrupted: npsd stopped during this reminder's SMTP transaction, so "
                        "the mail server may or may not have it; not sent again (at most once)")
RESTORED = "sent (its .eml was found in the outbox after npsd stopped)"
# Reminder claims are not renewed (that would touch every sent survey with a reminder to
# come): their lease is long enough for any batch to be sent; a dead process's come back
# when it is seen dead, or after the lease. A reminder claimed twice is still sent once (its
# hand-off mark checks that it is ours and not marked yet).
REMINDER_LEASE = timedelta(minutes=10)


@dataclass(frozen=True)
class Claimed:
    id: int
    user_id: str
    token: str
    attempts: int
    reminder: bool
    user: dict[str, Any] | None  # None when the user no longer exists
    suppressed: bool
    accounts: tuple[str, ...]
    email_key: str | None = None  # the address it was planned for (survey_plan.email_key)


@dataclass(frozen=True)
class Delivered:
    """What the file backend's outbox proves about a dead owner's hand-offs: the surveys in
    `ids` have their .eml written (recorded sent, with these times); the others were not
    written, so they go back to pending (exactly once, as a file is written atomically)."""
    ids: frozenset[int]
    expires_at: datetime | None = None
    reminder_due_at: datetime | None = None
    reminders: frozenset[int] = frozenset()  # marked reminders whose .eml is written


@dataclass(frozen=True)
class HandedOff:
    """A holder's hand-offs not yet settled: surveys and reminders."""
    surveys: list[int]
    reminders: list[int]


async def _release(db: Database, which: Any, now: datetime, *,
                   fail_handed_off: bool = True,
                   delivered: Delivered | None = None,
                   reminders_due_by: datetime | None = None) -> tuple[int, int]:
    """The one rule for taking claims back: a claim not yet handed off returns to pending;
    one whose SMTP transaction had started fails and is never sent again (at most once),
    with a decision saying so; with `delivered` (the outbox was looked at) none fails.
    Reminder claims (due by `reminders_due_by`, or any) follow the same rule."""
    claimed = sa.and_(SURVEYS.c.state == SurveyState.SENDING, which)
    handed = sa.and_(claimed, SURVEYS.c.handoff_at.is_not(None))
    decided: list[dict[str, Any]] = []
    async with db.write() as conn:
        if delivered is not None:
            found = [int(r[0]) for part in chunks(sorted(delivered.ids)) for r in
                     await conn.execute(sa.select(SURVEYS.c.id).where(handed,
                                                                      SURVEYS.c.id.in_(part)))]
            if found:
                await _count_sent(conn, db.dialect, found, now)
            written = [r for part in chunks(found) for r in await conn.execute(
                sa.update(SURVEYS).where(handed, SURVEYS.c.id.in_(part))
                .values(state=SurveyState.SENT, sent_at=now,
                        expires_at=delivered.expires_at,
                        reminder_due_at=delivered.reminder_due_at, lease_owner=None,
                        lease_until=None, last_error=None)
                .returning(SURVEYS.c.id, SURVEYS.c.user_id))]
            decided += [_decision(r, now, SurveyState.SENT, RESTORED) for r in written]
        back = (await conn.execute(
            sa.update(SURVEYS)
            .where(claimed if delivered is not None else
                   sa.and_(claimed, SURVEYS.c.handoff_at.is_(None)))
            .values(state=SurveyState.PENDING, lease_owner=None, lease_until=None,
                    handoff_at=None))).rowcount
        failed = 0
        if fail_handed_off and delivered is None:
            lost = (await conn.execute(
                sa.update(SURVEYS).where(handed)
                .values(state=SurveyState.FAILED, lease_owner=None, lease_until=None,
                        last_error=INTERRUPTED)
                .returning(SURVEYS.c.id, SURVEYS.c.user_id))).all()
            failed = len(lost)
            decided += [_decision(r, now, SurveyState.FAILED, INTERRUPTED) for r in lost]
        due = (SURVEYS.c.reminder_due_at.is_not(None) if reminders_due_by is None
               else SURVEYS.c.reminder_due_at <= reminders_due_by)
        reminders_back, reminders_failed = await _release_reminders(
            conn, sa.and_(due, which), now, fail_handed_off, delivered, decided)
        if decided:  # `npsd why` shows what became of each one, with its reason
            await conn.execute(sa.insert(DECISIONS), decided)
    return back + reminders_back, failed + reminders_failed


async def _release_reminders(conn: AsyncConnection, which: Any, now: datetime,
                             fail_handed_off: bool, delivered: Delivered | None,
                             decided: list[dict[str, Any]]) -> tuple[int, int]:
    """The same rule for reminder claims (`which` includes that they are due)."""
    claimed = sa.and_(SURVEYS.c.lease_owner.is_not(None), which)
    handed = sa.and_(claimed, SURVEYS.c.reminder_sent_at.is_not(None))
    if delivered is not None and delivered.reminders:
        for part in chunks(sorted(delivered.reminders)):
            written = (await conn.execute(
                sa.update(SURVEYS).where(handed, SURVEYS.c.id.in_(part))
                .values(reminder_due_at=None, lease_owner=None, lease_until=None)
                .returning(SURVEYS.c.id, SURVEYS.c.user_id))).all()
            decided += [_decision(r, now, "reminder sent", RESTORED) for r in written]
    back = (await conn.execute(
        sa.update(SURVEYS)
        .where(claimed if delivered is not None else
               sa.and_(claimed, SURVEYS.c.reminder_sent_at.is_(None)))
        .values(lease_owner=None, lease_until=None, reminder_sent_at=None))).rowcount
    if not fail_handed_off or delivered is not None:
        return back, 0
    lost = (await conn.execute(
        sa.update(SURVEYS).where(handed)
        .values(reminder_due_at=None, lease_owner=None, lease_until=None,
                last_error=INTERRUPTED_REMINDER)
        .returning(SURVEYS.c.id, SURVEYS.c.user_id))).all()
    decided += [_decision(r, now, "reminder failed", INTERRUPTED_REMINDER) for r in lost]
    return back, len(lost)


def _decision(row: Any, at: datetime, outcome: str, reason: str) -> dict[str, Any]:
    return {"user_id": row[1], "at": at, "survey_id": row[0], "outcome": outcome,
            "reason": reason}


async def handed_off(db: Database, owner: str) -> HandedOff:
    """The claims of `owner` whose SMTP transaction (or .eml write) had started."""
    async with db.read() as conn:
        rows = await conn.execute(
            sa.select(SURVEYS.c.id).where(SURVEYS.c.state == SurveyState.SENDING,
                                          SURVEYS.c.lease_owner == owner,
                                          SURVEYS.c.handoff_at.is_not(None)))
        reminders = await conn.execute(
            sa.select(SURVEYS.c.id).where(SURVEYS.c.reminder_due_at.is_not(None),
                                          SURVEYS.c.lease_owner == owner,
                                          SURVEYS.c.reminder_sent_at.is_not(None)))
        return HandedOff([int(r[0]) for r in rows], [int(r[0]) for r in reminders])


async def release_expired_leases(db: Database, now: datetime) -> tuple[int, int]:
    """Take back the claims of a process that died: (returned to pending, failed). A
    claimed reminder was due when it was claimed: the index on reminder_due_at keeps this
    to the reminders due by now."""
    return await _release(db, SURVEYS.c.lease_until < now, now, reminders_due_by=now)


async def lease_owners(db: Database, now: datetime) -> list[str]:
    async with db.read() as conn:
        owners = {str(r[0]) for r in await conn.execute(
            sa.select(SURVEYS.c.lease_owner).distinct()
            .where(SURVEYS.c.state == SurveyState.SENDING)) if r[0] is not None}
        owners.update(str(r[0]) for r in await conn.execute(
            sa.select(SURVEYS.c.lease_owner).distinct()
            .where(SURVEYS.c.reminder_due_at <= now, SURVEYS.c.lease_owner.is_not(None))))
        return sorted(owners)


async def release_owner(db: Database, owner: str, now: datetime,
                        delivered: Delivered | None = None) -> tuple[int, int]:
    """Take back every claim of a holder known to be dead (same rules as lease expiry, or
    by what its outbox shows with `delivered`)."""
    return await _release(db, SURVEYS.c.lease_owner == owner, now, delivered=delivered)


async def release_unsent(db: Database, owner: str, now: datetime) -> int:
    """On a clean stop: claims not yet handed off (surveys and reminders) are free again
    for the next start."""
    back, _ = await _release(db, SURVEYS.c.lease_owner == owner, now, fail_handed_off=False)
    return back


async def claim_due(
    db: Database, now: datetime, owner: str, limit: int, lease: timedelta
) -> list[Claimed]:
    """Atomically lease up to `limit` due surveys (FOR UPDATE SKIP LOCKED on PostgreSQL)."""
    async with db.write() as conn:
        due = (sa.select(SURVEYS.c.id)
               .where(SURVEYS.c.state == SurveyState.PENDING, SURVEYS.c.due_at <= now)
               .order_by(SURVEYS.c.due_at).limit(limit))
        due = db.dialect.claimable(due)
        rows = (await conn.execute(
            sa.update(SURVEYS).where(SURVEYS.c.id.in_(due.scalar_subquery()))
            .values(state=SurveyState.SENDING, lease_owner=owner, lease_until=now + lease)
            .returning(SURVEYS.c.id, SURVEYS.c.user_id, SURVEYS.c.token, SURVEYS.c.attempts,
                       SURVEYS.c.email_key)
        )).all()
        reminders = await _claim_reminders(conn, db.dialect, now, max(0, limit - len(rows)),
                                           owner, max(lease, REMINDER_LEASE))
        claimed = [(r[0], r[1], r[2], r[3], False, r[4]) for r in rows] + reminders
        return await _with_users(conn, claimed)


async def _claim_reminders(
    conn: AsyncConnection, dialect: Dialect, now: datetime, limit: int, owner: str,
    lease: timedelta
) -> list[tuple[int, str, str, int, bool, str | None]]:
    if limit <= 0:
        return []
    free = sa.or_(SURVEYS.c.lease_until.is_(None), SURVEYS.c.lease_until < now)
    due = (sa.select(SURVEYS.c.id)
           .where(SURVEYS.c.reminder_due_at <= now, SURVEYS.c.state == SurveyState.SENT,
                  SURVEYS.c.reminder_sent_at.is_(None), free)
           .order_by(SURVEYS.c.reminder_due_at).limit(limit))
    due = dialect.claimable(due)
    # A reminder is leased like a survey (its row stays "sent"): the hand-off journal's
    # mark, just before its own SMTP transaction, is what makes it sent (storage.journal);
    # a claim whose holder died is free again when the lease runs out.
    rows = (await conn.execute(
        sa.update(SURVEYS).where(SURVEYS.c.id.in_(due.scalar_subquery()), _person_ok())
        .values(lease_owner=owner, lease_until=now + lease)
        .returning(SURVEYS.c.id, SURVEYS.c.user_id, SURVEYS.c.token, SURVEYS.c.attempts,
                   SURVEYS.c.email_key)
    )).all()
    return [(r[0], r[1], r[2], r[3], True, r[4]) for r in rows]


async def _with_users(
    conn: AsyncConnection, claimed: list[tuple[int, str, str, int, bool, str | None]]
) -> list[Claimed]:
    user_ids = sorted({c[1] for c in claimed})
    users: dict[str, dict[str, Any]] = {}
    suppressed: set[str] = set()
    accounts: dict[str, list[str]] = {}
    for part in chunks(user_ids):
        for row in await conn.execute(sa.select(USERS).where(USERS.c.user_id.in_(part))):
            users[row.user_id] = dict(row._mapping)
        suppressed.update(r[0] for r in await conn.execute(
            sa.select(SUPPRESSIONS.c.user_id).where(SUPPRESSIONS.c.user_id.in_(part))))
        for row in await conn.execute(
            sa.select(MEMBERSHIPS.c.user_id, MEMBERSHIPS.c.group_id)
            .where(MEMBERSHIPS.c.user_id.in_(part), MEMBERSHIPS.c.active.is_(True))):
            accounts.setdefault(str(row[0]), []).append(str(row[1]))
    return [Claimed(id=c[0], user_id=c[1], token=c[2], attempts=c[3], reminder=c[4],
                    user=users.get(c[1]), suppressed=c[1] in suppressed,
                    accounts=tuple(sorted(accounts.get(c[1], ()))), email_key=c[5])
            for c in claimed]


async def sent_per_account(
    db: Database, group_ids: list[str], since: datetime
) -> dict[str, int]:
    """Surveys sent to members of each account since `since` (for survey.max_per_account)."""
    counts: dict[str, int] = {}
    async with db.read() as conn:
        for part in chunks(group_ids):
            rows = await conn.execute(
                sa.select(MEMBERSHIPS.c.group_id, sa.func.count(SURVEYS.c.id))
                .join(SURVEYS, SURVEYS.c.user_id == MEMBERSHIPS.c.user_id)
                .where(MEMBERSHIPS.c.group_id.in_(part), MEMBERSHIPS.c.active.is_(True),
                       SURVEYS.c.sent_at >= since, SURVEYS.c.kind == "survey")
                .group_by(MEMBERSHIPS.c.group_id))
            counts.update({str(r[0]): int(r[1]) for r in rows})
    return counts


def _person_ok() -> sa.ColumnElement[bool]:
    """The survey's user exists, is not unsubscribed and not suppressed (erased)."""
    return sa.and_(
        sa.exists().where(USERS.c.user_id == SURVEYS.c.user_id,
                          USERS.c.unsubscribed_at.is_(None)),
        ~sa.exists().where(SUPPRESSIONS.c.user_id == SURVEYS.c.user_id))


async def address_last_surveyed(db: Database, keys: list[str], since: datetime
                                ) -> dict[str, datetime]:
    """Per address key, when a survey last went to it (since `since`; one being handed to
    SMTP counts as now)."""
    out: dict[str, datetime] = {}
    sending = sa.and_(SURVEYS.c.state == SurveyState.SENDING, SURVEYS.c.handoff_at.is_not(None))
    when = sa.case((sending, SURVEYS.c.handoff_at), else_=SURVEYS.c.sent_at)
    async with db.read() as conn:
        for part in chunks(sorted(set(keys))):
            rows = await conn.execute(
                sa.select(SURVEYS.c.email_key, sa.func.max(when))
                .where(SURVEYS.c.email_key.in_(part), SURVEYS.c.kind == "survey",
                       sa.or_(SURVEYS.c.sent_at >= since, sending))
                .group_by(SURVEYS.c.email_key))
            for row in rows:
                found: datetime | None = utc(row[1])
                if found is not None:
                    out[str(row[0])] = found
    return out


async def set_email_keys(db: Database, rows: list[tuple[int, str | None]]) -> None:
    """Record the address each claimed survey is about to go to (it may have changed since
    it was planned)."""
    if rows:
        async with db.write() as conn:
            await conn.execute(
                sa.update(SURVEYS).where(SURVEYS.c.id == sa.bindparam("b_id"))
                .values(email_key=sa.bindparam("b_key", type_=sa.Text)),
                [{"b_id": i, "b_key": k} for i, k in rows])


@dataclass(frozen=True)
class Outcome:
    survey_id: int
    user_id: str
    state: SurveyState  # sent, pending (retry or deferred), failed, skipped
    reason: str
    due_at: datetime | None = None
    expires_at: datetime | None = None
    reminder_due_at: datetime | None = None
    reminder: bool = False


async def _count_sent(conn: AsyncConnection, dialect: Dialect, ids: list[int],
                      now: datetime) -> None:
    """The running totals (storage.nps_totals) of surveys about to be recorded sent."""
    before = [Counted(r.user_id, utc(r.sent_at), r.score, utc(r.answered_at))
              for part in chunks(sorted(set(ids))) for r in await conn.execute(
                  sa.select(SURVEYS.c.user_id, SURVEYS.c.sent_at, SURVEYS.c.score,
                            SURVEYS.c.answered_at)
                  .where(SURVEYS.c.id.in_(part), SURVEYS.c.kind == "survey"))]
    after = [replace(c, sent_at=now) for c in before]
    await run_async(record_change(Values(dialect), before, after), conn)


async def earliest_due(db: Database) -> datetime | None:
    async with db.read() as conn:
        value = (await conn.execute(
            sa.select(sa.func.min(SURVEYS.c.due_at)).where(SURVEYS.c.state == SurveyState.PENDING)
        )).scalar()
        reminder = (await conn.execute(
            sa.select(sa.func.min(SURVEYS.c.reminder_due_at))
            .where(SURVEYS.c.state == SurveyState.SENT, SURVEYS.c.reminder_sent_at.is_(None))
        )).scalar()
    candidates = [utc(v) for v in (value, reminder) if v is not None]
    return min(c for c in candidates if c is not None) if candidates else None


async def expire_unanswered(db: Database, now: datetime) -> int:
    async with db.write() as conn:
        result = await conn.execute(
            sa.update(SURVEYS)
            .where(SURVEYS.c.state == SurveyState.SENT, SURVEYS.c.expires_at <= now)
            .values(state=SurveyState.EXPIRED, reminder_due_at=None))
    return result.rowcount
