"""Turning identifies into surveys, inside the intake transaction (an accepted identify and
its survey are committed together). The rules themselves are pure and injected."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.book_rules import Book
from storage.db import utc
from storage.sqlutil import DECISIONS, SURVEYS, chunks

log = structlog.get_logger("npsd.survey")

OPEN_STATES = ("pending", "sending")
# States that count as "surveyed" for the re-survey interval.
SURVEYED_STATES = ("pending", "sending", "sent", "answered", "expired")


@dataclass(frozen=True)
class SurveyHistory:
    has_pending: bool
    last_survey_at: datetime | None


@dataclass(frozen=True)
class Plan:
    action: str  # "schedule" or "skip"
    reason: str
    due_at: datetime | None = None


class Planner(Protocol):
    def __call__(self, user: dict[str, Any], history: SurveyHistory, now: datetime) -> Plan: ...


def new_token() -> str:
    """192 random bits, URL-safe: survey and unsubscribe links cannot be guessed."""
    return secrets.token_urlsafe(24)


async def survey_history(conn: AsyncConnection, user_ids: list[str]) -> dict[str, SurveyHistory]:
    pending: set[str] = set()
    last: dict[str, datetime] = {}
    for part in chunks(user_ids):
        rows = await conn.execute(
            sa.select(SURVEYS.c.user_id, SURVEYS.c.state,
                      sa.func.coalesce(SURVEYS.c.sent_at, SURVEYS.c.due_at))
            .where(SURVEYS.c.user_id.in_(part), SURVEYS.c.state.in_(SURVEYED_STATES),
                   SURVEYS.c.kind == "survey")
        )
        for row in rows:
            user_id, state = str(row[0]), str(row[1])
            if state in OPEN_STATES:
                pending.add(user_id)
            at = utc(row[2])
            if at is not None and (user_id not in last or at > last[user_id]):
                last[user_id] = at
    return {u: SurveyHistory(u in pending, last.get(u)) for u in user_ids}


async def last_reasons(conn: AsyncConnection, user_ids: list[str]) -> dict[str, str]:
    newest = (sa.select(DECISIONS.c.user_id, sa.func.max(DECISIONS.c.id).label("id"))
              .where(DECISIONS.c.user_id.in_(sa.bindparam("ids", expanding=True)))
              .group_by(DECISIONS.c.user_id).subquery())
    out: dict[str, str] = {}
    for part in chunks(user_ids):
        rows = await conn.execute(
            sa.select(DECISIONS.c.user_id, DECISIONS.c.reason)
            .join(newest, DECISIONS.c.id == newest.c.id), {"ids": part})
        out.update({r[0]: r[1] for r in rows})
    return out


async def plan_surveys(conn: AsyncConnection, book: Book, planner: Planner, now: datetime) -> None:
    user_ids = sorted(u for u in book.identified if u in book.users)
    history = await survey_history(conn, user_ids)
    previous = await last_reasons(conn, user_ids)
    surveys: list[dict[str, Any]] = []
    decisions: list[dict[str, Any]] = []
    for user_id in user_ids:
        plan = planner(book.users[user_id], history[user_id], now)
        if plan.action == "schedule" and plan.due_at is not None:
            surveys.append({"user_id": user_id, "token": new_token(), "state": "pending",
                            "due_at": plan.due_at, "created_at": now})
            decisions.append({"user_id": user_id, "at": now, "outcome": "scheduled",
                              "reason": plan.reason})
        elif previous.get(user_id) != plan.reason:
            # Identifies repeat on every page load: log a skip only when the reason changes.
            decisions.append({"user_id": user_id, "at": now, "outcome": "skipped",
                              "reason": plan.reason})
    if surveys:
        await conn.execute(sa.insert(SURVEYS), surveys)
        for survey in surveys:
            log.info("survey.scheduled", user_id=survey["user_id"],
                     due_at=survey["due_at"].isoformat())
    if decisions:
        await conn.execute(sa.insert(DECISIONS), decisions)
