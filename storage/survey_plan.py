"""Turning identifies into surveys, inside the intake transaction (an accepted identify and
its survey are committed together). The rules themselves are pure and injected."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from storage.book_rules import Book
from storage.sql_steps import Steps, Values, fetch_in, many

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


_HISTORY = ("SELECT user_id, state, coalesce(sent_at, due_at) FROM surveys "
            "WHERE kind = 'survey' AND state IN ({states}) AND user_id IN ({{}})").format(
                states=", ".join(f"'{s}'" for s in SURVEYED_STATES))
_LAST_REASONS = ("SELECT d.user_id, d.reason FROM decisions d JOIN (SELECT max(id) AS id "
                 "FROM decisions WHERE user_id IN ({}) GROUP BY user_id) newest "
                 "ON d.id = newest.id")


def survey_history(v: Values, user_ids: list[str]) -> Steps[dict[str, SurveyHistory]]:
    pending: set[str] = set()
    last: dict[str, datetime] = {}
    for row in (yield from fetch_in(_HISTORY, user_ids)):
        user_id, state = str(row[0]), str(row[1])
        if state in OPEN_STATES:
            pending.add(user_id)
        at = v.dt(row[2])
        if at is not None and (user_id not in last or at > last[user_id]):
            last[user_id] = at
    return {u: SurveyHistory(u in pending, last.get(u)) for u in user_ids}


def last_reasons(user_ids: list[str]) -> Steps[dict[str, str]]:
    return {str(r[0]): str(r[1]) for r in (yield from fetch_in(_LAST_REASONS, user_ids))}


def plan_surveys(v: Values, book: Book, planner: Planner, now: datetime
                 ) -> Steps[list[tuple[str, datetime]]]:
    """Schedules (or records why not) a survey for each identified user; returns the
    (user, due) pairs scheduled, to be logged once committed."""
    user_ids = sorted(u for u in book.identified if u in book.users)
    history = yield from survey_history(v, user_ids)
    previous = yield from last_reasons(user_ids)
    surveys: list[tuple[Any, ...]] = []
    decisions: list[tuple[Any, ...]] = []
    scheduled: list[tuple[str, datetime]] = []
    for user_id in user_ids:
        plan = planner(book.users[user_id], history[user_id], now)
        if plan.action == "schedule" and plan.due_at is not None:
            surveys.append((user_id, new_token(), "survey", "pending", v.ts(plan.due_at),
                            v.ts(now), 0, 0, 0, v.flag(False)))
            decisions.append((user_id, v.ts(now), "scheduled", plan.reason))
            scheduled.append((user_id, plan.due_at))
        elif previous.get(user_id) != plan.reason:
            # Identifies repeat on every page load: log a skip only when the reason changes.
            decisions.append((user_id, v.ts(now), "skipped", plan.reason))
    yield from many("INSERT INTO surveys (user_id, token, kind, state, due_at, created_at, "
                    "attempts, answer_revision, synced_revision, needs_sync) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", surveys)
    yield from many("INSERT INTO decisions (user_id, at, outcome, reason) VALUES (?, ?, ?, ?)",
                    decisions)
    return scheduled
