"""The outbox of alerts and webhooks (table `deliveries`, storage.models.Delivery).

Rows are written inside the transaction of what causes them — an answer, an unsubscribe,
an erasure — from what a `LoopPolicy` (jobs/loop_events.py, built from the settings) makes
of the facts, so a crash loses none and an answer that did not commit sends none. Then
jobs/deliveries.py claims due rows (leased, skip-locked on PostgreSQL), delivers them and
settles each: delivered, retried later, dead-lettered or dropped. Dead letters go back to
pending with `replay_dead` (`npsd webhooks replay`), keeping their webhook-id.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.db import Database, utc, utc_required
from storage.fast_path import Steps, Values, many
from storage.models import TZ
from storage.sqlutil import ACCOUNTS, DELIVERIES, MEMBERSHIPS, USERS

PENDING, DELIVERED, DEAD, DROPPED = "pending", "delivered", "dead", "dropped"
STATES = (PENDING, DELIVERED, DEAD, DROPPED)


@dataclass(frozen=True)
class AnswerFacts:
    """What an answer's alert and webhook say, read inside the answer's transaction."""

    survey_id: int
    user_id: str
    email: str | None
    name: str | None
    accounts: tuple[tuple[str, str | None], ...]  # (groupId, stored name)
    score: int
    previous_score: int | None  # None for a first answer
    comment: str | None
    revision: int  # 1 for the first answer, 2 for its first revision, …
    answered_at: datetime


@dataclass(frozen=True)
class NewDelivery:
    webhook_id: str
    channel: str  # "webhook", "slack" or "email"
    target: str
    event: str
    body: str
    user_id: str | None  # whose it is (erasure finds it); None for user.erased
    survey_id: int | None = None


class LoopPolicy(Protocol):
    """What to deliver for an event (jobs/loop_events.py); `[]` for nothing."""

    @property
    def active(self) -> bool:
        """False when nothing is configured: the answer's transaction reads nothing more."""
        ...

    def on_answer(self, facts: AnswerFacts) -> list[NewDelivery]: ...

    def on_unsubscribe(self, user_id: str, email: str | None,
                       at: datetime) -> list[NewDelivery]: ...

    def on_erasure(self, user_ids: list[str], at: datetime) -> list[NewDelivery]: ...


@dataclass(frozen=True)
class Claimed:
    id: int
    webhook_id: str
    channel: str
    target: str
    event: str
    body: str
    attempts: int  # tries made before this one
    retry_from: datetime
    survey_id: int | None


@dataclass(frozen=True)
class Settled:
    """How one attempt ended: `state` DELIVERED, DEAD, DROPPED, or PENDING with `due_at`."""

    id: int
    state: str
    status: int | None = None  # the receiver's HTTP status (or SMTP code)
    error: str | None = None  # why it failed, never a body
    due_at: datetime | None = None


_COLUMNS = ("webhook_id", "channel", "target", "event", "user_id", "survey_id", "body", "state",
            "created_at", "due_at", "retry_from", "attempts")


def insert(v: Values, rows: list[NewDelivery], now: datetime) -> Steps[None]:
    """The rows, due at once, as steps of the caller's transaction."""
    at = v.ts(now)
    yield from many(
        f"INSERT INTO deliveries ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * 12)})",
        [(r.webhook_id, r.channel, r.target, r.event, r.user_id, r.survey_id, r.body, PENDING,
          at, at, at, 0) for r in rows])


async def insert_now(conn: AsyncConnection, rows: list[NewDelivery], now: datetime) -> None:
    """`insert` on an open SQLAlchemy transaction (the answer and unsubscribe paths)."""
    if rows:
        await conn.execute(sa.insert(DELIVERIES), [
            {"webhook_id": r.webhook_id, "channel": r.channel, "target": r.target,
             "event": r.event, "user_id": r.user_id, "survey_id": r.survey_id, "body": r.body,
             "state": PENDING, "created_at": now, "due_at": now, "retry_from": now,
             "attempts": 0} for r in rows])


async def person(conn: AsyncConnection, user_id: str
                 ) -> tuple[str | None, str | None, tuple[tuple[str, str | None], ...]]:
    """(email, name, accounts) of a user, read in the caller's transaction."""
    user = (await conn.execute(
        sa.select(USERS.c.email, USERS.c.name, USERS.c.first_name, USERS.c.last_name)
        .where(USERS.c.user_id == user_id))).first()
    rows = await conn.execute(
        sa.select(MEMBERSHIPS.c.group_id, ACCOUNTS.c.traits)
        .outerjoin(ACCOUNTS, ACCOUNTS.c.group_id == MEMBERSHIPS.c.group_id)
        .where(MEMBERSHIPS.c.user_id == user_id, MEMBERSHIPS.c.active.is_(True))
        .order_by(MEMBERSHIPS.c.group_id))
    accounts = tuple((str(r[0]), _account_name(r[1])) for r in rows)
    if user is None:
        return None, None, accounts
    name = user.name or " ".join(p for p in (user.first_name, user.last_name) if p) or None
    return user.email, name, accounts


def _account_name(traits: Any) -> str | None:
    import json

    try:
        value = json.loads(traits or "{}").get("name")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and value else None


async def claim(db: Database, now: datetime, owner: str, limit: int,
                lease: timedelta) -> list[Claimed]:
    """Lease up to `limit` due rows (their lease, if any, over) for `owner`."""
    async with db.write() as conn:
        due = (sa.select(DELIVERIES.c.id)
               .where(DELIVERIES.c.state == PENDING, DELIVERIES.c.due_at <= now,
                      sa.or_(DELIVERIES.c.lease_until.is_(None),
                             DELIVERIES.c.lease_until < now))
               .order_by(DELIVERIES.c.due_at, DELIVERIES.c.id).limit(limit))
        due = db.dialect.claimable(due)
        rows = (await conn.execute(
            sa.update(DELIVERIES).where(DELIVERIES.c.id.in_(due.scalar_subquery()))
            .values(lease_owner=owner, lease_until=now + lease)
            .returning(DELIVERIES.c.id, DELIVERIES.c.webhook_id, DELIVERIES.c.channel,
                       DELIVERIES.c.target, DELIVERIES.c.event, DELIVERIES.c.body,
                       DELIVERIES.c.attempts, DELIVERIES.c.retry_from,
                       DELIVERIES.c.survey_id))).all()
    found = [Claimed(r[0], r[1], r[2], r[3], r[4], r[5], r[6], utc_required(r[7]), r[8])
             for r in rows]
    return sorted(found, key=lambda c: c.id)


def _param(name: str, type_: Any) -> Any:
    return sa.bindparam(name, type_=type_)


# One statement for every outcome of a batch (executemany): compiled once, not per row.
_SETTLE = (sa.update(DELIVERIES)
           .where(DELIVERIES.c.id == sa.bindparam("b_id"),
                  DELIVERIES.c.lease_owner == sa.bindparam("b_owner"),
                  DELIVERIES.c.state == PENDING)
           .values(state=_param("b_state", sa.Text), attempts=DELIVERIES.c.attempts + 1,
                   last_status=_param("b_status", sa.Integer),
                   last_error=_param("b_error", sa.Text),
                   finished_at=_param("b_finished", TZ),
                   due_at=sa.func.coalesce(_param("b_due", TZ), DELIVERIES.c.due_at),
                   lease_owner=None, lease_until=None))


async def settle(db: Database, outcomes: list[Settled], now: datetime, owner: str) -> None:
    """Record each attempt; a row erased meanwhile (or no longer ours) is left alone."""
    if not outcomes:
        return
    async with db.write() as conn:
        await conn.execute(_SETTLE, [
            {"b_id": o.id, "b_owner": owner, "b_state": o.state, "b_status": o.status,
             "b_error": o.error, "b_finished": None if o.state == PENDING else now,
             "b_due": o.due_at} for o in outcomes])


async def lease_owners(db: Database) -> list[str]:
    async with db.read() as conn:
        rows = await conn.execute(sa.select(DELIVERIES.c.lease_owner).distinct().where(
            DELIVERIES.c.state == PENDING, DELIVERIES.c.lease_owner.is_not(None)))
        return [str(r[0]) for r in rows]


async def release(db: Database, owner: str) -> int:
    """Give back `owner`'s claims (a clean stop, or a holder known dead): due again now.
    A delivery interrupted mid-request is sent again, with the same webhook-id."""
    async with db.write() as conn:
        return int((await conn.execute(
            sa.update(DELIVERIES)
            .where(DELIVERIES.c.state == PENDING, DELIVERIES.c.lease_owner == owner)
            .values(lease_owner=None, lease_until=None))).rowcount)


async def replay_dead(db: Database, now: datetime, since: datetime | None) -> int:
    """Dead letters (of events since `since`) back to pending, due now, with a new retry
    horizon from now; their webhook-ids stay. How many."""
    where = [DELIVERIES.c.state == DEAD]
    if since is not None:
        where.append(DELIVERIES.c.created_at >= since)
    async with db.write() as conn:
        return int((await conn.execute(
            sa.update(DELIVERIES).where(*where)
            .values(state=PENDING, due_at=now, retry_from=now, finished_at=None,
                    lease_owner=None, lease_until=None))).rowcount)


async def counts(db: Database, now: datetime) -> dict[str, Any]:
    """Deliveries by state, how many are due now, and the oldest dead letter."""
    async with db.read() as conn:
        by_state = {str(r[0]): int(r[1]) for r in await conn.execute(
            sa.select(DELIVERIES.c.state, sa.func.count()).group_by(DELIVERIES.c.state))}
        due = int((await conn.execute(sa.select(sa.func.count()).where(
            DELIVERIES.c.state == PENDING, DELIVERIES.c.due_at <= now))).scalar() or 0)
        oldest_dead = utc((await conn.execute(sa.select(sa.func.min(
            DELIVERIES.c.created_at)).where(DELIVERIES.c.state == DEAD))).scalar())
    return {**{s: by_state.get(s, 0) for s in STATES}, "due_now": due,
            "oldest_dead_letter": oldest_dead.isoformat() if oldest_dead else None}


async def prune(db: Database, before: datetime) -> int:
    """Forget delivered and dropped rows finished before `before` (they hold comments)."""
    async with db.write() as conn:
        return int((await conn.execute(sa.delete(DELIVERIES).where(
            DELIVERIES.c.state.in_((DELIVERED, DROPPED)),
            DELIVERIES.c.finished_at < before))).rowcount)
