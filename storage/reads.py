"""Read models for the admin API and the CLI: users, accounts, NPS, decisions, status."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.db import Database, utc
from storage.nps import count_columns, nps
from storage.sqlutil import (
    ACCOUNTS,
    ALIASES,
    DAYS,
    DECISIONS,
    MEMBERSHIPS,
    SURVEYS,
    SYNC_FAILURES,
    SYNC_STATE,
    USERS,
)
from storage.states import SurveyState
from storage.timeparse import iso

PUBLIC_STATES = tuple(SurveyState)


async def _resolve(conn: AsyncConnection, some_id: str) -> str:
    row = (await conn.execute(sa.select(ALIASES.c.user_id)
                              .where(ALIASES.c.alias_id == some_id))).first()
    return row[0] if row is not None else some_id


async def get_user(db: Database, some_id: str) -> dict[str, Any] | None:
    async with db.read() as conn:
        user_id = await _resolve(conn, some_id)
        row = (await conn.execute(sa.select(USERS).where(USERS.c.user_id == user_id))).first()
        if row is None:
            return None
        accounts = [r[0] for r in await conn.execute(
            sa.select(MEMBERSHIPS.c.group_id).where(MEMBERSHIPS.c.user_id == user_id,
                                                     MEMBERSHIPS.c.active.is_(True))
            .order_by(MEMBERSHIPS.c.group_id))]
        aliases = [r[0] for r in await conn.execute(
            sa.select(ALIASES.c.alias_id).where(ALIASES.c.user_id == user_id)
            .order_by(ALIASES.c.alias_id))]
        surveys = [_survey(r) for r in await conn.execute(
            sa.select(SURVEYS).where(SURVEYS.c.user_id == user_id).order_by(SURVEYS.c.id))]
    return {
        "userId": row.user_id,
        "anonymous": row.anonymous,
        "traits": json.loads(row.traits),
        "email": row.email,
        "firstName": row.first_name,
        "lastName": row.last_name,
        "name": row.name,
        "gender": row.gender,
        "timezone": row.timezone,
        "locale": row.locale,
        "createdAt": iso(utc(row.created_at)),
        "accounts": [{"groupId": g} for g in accounts],
        "aliases": aliases,
        "activity": {
            "first_seen": iso(utc(row.first_seen)),
            "last_seen": iso(utc(row.last_seen)),
            "events": row.event_count,
            "sessions": row.session_count,
        },
        "surveys": surveys,
        "unsubscribed": row.unsubscribed_at is not None,
    }


async def user_exists(db: Database, some_id: str) -> bool:
    """Whether this id (or the alias of one) names a user in the book."""
    async with db.read() as conn:
        user_id = await _resolve(conn, some_id)
        return (await conn.execute(sa.select(USERS.c.user_id)
                                   .where(USERS.c.user_id == user_id))).first() is not None


def _survey(r: Any) -> dict[str, Any]:
    return {"id": r.id, "state": r.state, "due_at": iso(utc(r.due_at)),
            "sent_at": iso(utc(r.sent_at)), "score": r.score, "comment": r.comment,
            "answered_at": iso(utc(r.answered_at)), "expires_at": iso(utc(r.expires_at)),
            "reminder_sent_at": iso(utc(r.reminder_sent_at)), "attempts": r.attempts,
            "last_error": r.last_error}


async def get_account(db: Database, group_id: str) -> dict[str, Any] | None:
    async with db.read() as conn:
        row = (await conn.execute(sa.select(ACCOUNTS).where(ACCOUNTS.c.group_id == group_id))
               ).first()
        if row is None:
            return None
        members = [r[0] for r in await conn.execute(
            sa.select(MEMBERSHIPS.c.user_id).where(MEMBERSHIPS.c.group_id == group_id,
                                                    MEMBERSHIPS.c.active.is_(True))
            .order_by(MEMBERSHIPS.c.user_id))]
        activity = (await conn.execute(
            sa.select(sa.func.min(USERS.c.first_seen), sa.func.max(USERS.c.last_seen),
                      sa.func.coalesce(sa.func.sum(USERS.c.event_count), 0),
                      sa.func.coalesce(sa.func.sum(USERS.c.session_count), 0))
            .join(MEMBERSHIPS, MEMBERSHIPS.c.user_id == USERS.c.user_id)
            .where(MEMBERSHIPS.c.group_id == group_id, MEMBERSHIPS.c.active.is_(True)))).one()
        summary = await _summary(conn, group_id=group_id)
    return {
        "groupId": row.group_id,
        "traits": json.loads(row.traits),
        "members": members,
        "createdAt": iso(utc(row.created_at)),
        "deleted": row.deleted_at is not None,
        "activity": {"first_seen": iso(utc(activity[0])), "last_seen": iso(utc(activity[1])),
                     "events": int(activity[2]), "sessions": int(activity[3])},
        **summary,
    }


async def _summary(
    conn: AsyncConnection, *, group_id: str | None = None
) -> dict[str, Any]:
    answered = (sa.select(*count_columns(SURVEYS.c.score, SURVEYS.c.sent_at))
                .where(SURVEYS.c.kind == "survey"))
    if group_id is not None:
        answered = answered.join(MEMBERSHIPS, MEMBERSHIPS.c.user_id == SURVEYS.c.user_id).where(
            MEMBERSHIPS.c.group_id == group_id, MEMBERSHIPS.c.active.is_(True))
    p, n, d, sent = ((v or 0) for v in (await conn.execute(answered)).one())
    return _figures(int(p), int(n), int(d), int(sent))


def _figures(p: int, n: int, d: int, sent: int) -> dict[str, Any]:
    responses = p + n + d
    return {"nps": nps(p, n, d), "promoters": p, "passives": n, "detractors": d,
            "responses": responses, "sent": sent,
            "response_rate": round(responses / sent, 4) if sent else None}


async def nps_report(db: Database, by: str | None = None) -> dict[str, Any]:
    async with db.read() as conn:
        if by is None:  # the running totals (storage/nps_totals.py), as the dashboard reads
            row = (await conn.execute(sa.select(*(sa.func.coalesce(sa.func.sum(c), 0) for c in (
                DAYS.c.promoters, DAYS.c.passives, DAYS.c.detractors, DAYS.c.sent))))).one()
            return _figures(*(int(v) for v in row))
        if by == "account":
            key: Any = MEMBERSHIPS.c.group_id
            base = sa.select(key).join(MEMBERSHIPS, MEMBERSHIPS.c.user_id == SURVEYS.c.user_id) \
                .where(MEMBERSHIPS.c.active.is_(True))
        else:
            stamp = sa.func.coalesce(SURVEYS.c.answered_at, SURVEYS.c.sent_at)
            key = db.dialect.month_key(stamp)
            base = sa.select(key)
        query = (base.add_columns(*count_columns(SURVEYS.c.score, SURVEYS.c.sent_at))
                 .where(SURVEYS.c.kind == "survey", SURVEYS.c.sent_at.is_not(None))
                 .group_by(key).order_by(key))
        if by != "account":
            query = query.select_from(SURVEYS)
        rows = (await conn.execute(query)).all()
    return {"by": by, "groups": [
        {"key": r[0], **_figures(int(r[1] or 0), int(r[2] or 0), int(r[3] or 0), int(r[4] or 0))}
        for r in rows if r[0] is not None]}


async def decisions(db: Database, some_id: str) -> list[dict[str, Any]] | None:
    async with db.read() as conn:
        user_id = await _resolve(conn, some_id)
        rows = (await conn.execute(
            sa.select(DECISIONS).where(DECISIONS.c.user_id == user_id).order_by(DECISIONS.c.id)
        )).all()
        if not rows:
            exists = (await conn.execute(
                sa.select(USERS.c.user_id).where(USERS.c.user_id == user_id))).first()
            if exists is None:
                return None
    return [{"at": iso(utc(r.at)), "outcome": r.outcome, "reason": r.reason,
             "survey_id": r.survey_id} for r in rows]


async def status(db: Database, now: datetime) -> dict[str, Any]:
    async with db.read() as conn:
        states = {str(r[0]): int(r[1]) for r in await conn.execute(
            sa.select(SURVEYS.c.state, sa.func.count()).group_by(SURVEYS.c.state))}
        due = (await conn.execute(
            sa.select(sa.func.count(), sa.func.min(SURVEYS.c.due_at))
            .where(SURVEYS.c.state == SurveyState.PENDING, SURVEYS.c.due_at <= now))).one()
        backlog = int((await conn.execute(
            sa.select(sa.func.count()).where(SURVEYS.c.needs_sync.is_(True)))).scalar() or 0)
        sync = (await conn.execute(sa.select(SYNC_STATE))).first()
        failures = int((await conn.execute(sa.select(sa.func.count()).select_from(SYNC_FAILURES)
                                           )).scalar() or 0)
        users = int((await conn.execute(sa.select(sa.func.count()).select_from(USERS))
                     ).scalar() or 0)
        accounts = int((await conn.execute(sa.select(sa.func.count()).select_from(ACCOUNTS))
                        ).scalar() or 0)
    oldest = utc(due[1])
    return {
        "users": users, "accounts": accounts,
        "surveys": {s: states.get(s, 0) for s in PUBLIC_STATES},
        "due_now": int(due[0]),
        "oldest_due_seconds": (now - oldest).total_seconds() if oldest else 0.0,
        "sync": {
            "last_started_at": iso(utc(sync.last_started_at)) if sync else None,
            "last_finished_at": iso(utc(sync.last_finished_at)) if sync else None,
            "last_success_at": iso(utc(sync.last_success_at)) if sync else None,
            "last_result": sync.last_result if sync else None,
            "last_sent": sync.last_sent if sync else 0,
            "backlog": backlog,
            "failed_messages": failures,
        },
    }


async def account_figures(db: Database, group_ids: list[str]) -> dict[str, dict[str, Any]]:
    async with db.read() as conn:
        return {g: await _summary(conn, group_id=g) for g in sorted(set(group_ids))}
