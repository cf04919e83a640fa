"""Turning identifies into surveys, inside the intake transaction (an accepted identify and
its survey are committed together). The rules themselves are pure and injected."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from storage.book import Book
from storage.fast_path import Steps, Values, fetch_in, many
from storage.states import SurveyState

OPEN_STATES = (SurveyState.PENDING, SurveyState.SENDING)
# States that count as "surveyed" for the re-survey interval.
SURVEYED_STATES = (SurveyState.PENDING, SurveyState.SENDING, SurveyState.SENT,
                   SurveyState.ANSWERED, SurveyState.EXPIRED)


@dataclass(frozen=True)
class SurveyHistory:
    has_pending: bool
    last_survey_at: datetime | None
    # The same address under other user ids: one survey per address per interval.
    address_pending: bool = False
    address_surveyed_at: datetime | None = None


def email_key(address: str | None) -> str | None:
    """The address as the one-survey-per-address rule compares it: trimmed, case-folded,
    hashed (so this column is not one more copy of the address)."""
    if not address or not address.strip():
        return None
    return hashlib.sha256(address.strip().casefold().encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True)
class Plan:
    action: str  # "schedule" or "skip"
    reason: str
    due_at: datetime | None = None


Trigger = tuple[str, datetime]  # (event name, when it happened)


class Planner(Protocol):
    """The survey rules (jobs/planning.py): a decision for an identified user, or for one whose
    track named one of `trigger_events`."""

    @property
    def trigger_events(self) -> frozenset[str]: ...

    def __call__(self, user: dict[str, Any], history: SurveyHistory, now: datetime, *,
                 identified: bool = True, trigger: Trigger | None = None) -> Plan: ...


def new_token() -> str:
    """192 random bits, URL-safe: survey and unsubscribe links cannot be guessed."""
    return secrets.token_urlsafe(24)


_HISTORY = ("SELECT user_id, state, coalesce(sent_at, due_at) FROM surveys "
            "WHERE kind = 'survey' AND state IN ({states}) AND user_id IN ({{}})").format(
                states=", ".join(f"'{s}'" for s in SURVEYED_STATES))
_BY_ADDRESS = ("SELECT email_key, user_id, state, coalesce(sent_at, due_at) FROM surveys "
               "WHERE kind = 'survey' AND state IN ({states}) AND email_key IN ({{}})").format(
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


def address_history(v: Values, keys: dict[str, str]
                    ) -> Steps[dict[str, tuple[bool, datetime | None]]]:
    """Per user (with key in ``keys``): is a survey to the same address pending under another
    user id, and when that address was last surveyed under another user id."""
    found: dict[str, list[tuple[str, str, datetime | None]]] = {}
    for row in (yield from fetch_in(_BY_ADDRESS, set(keys.values()))):
        found.setdefault(str(row[0]), []).append((str(row[1]), str(row[2]), v.dt(row[3])))
    out: dict[str, tuple[bool, datetime | None]] = {}
    for user_id, key in keys.items():
        others = [(state, at) for uid, state, at in found.get(key, ()) if uid != user_id]
        times = [at for _, at in others if at is not None]
        out[user_id] = (any(state in OPEN_STATES for state, _ in others),
                        max(times) if times else None)
    return out


def last_reasons(user_ids: list[str]) -> Steps[dict[str, str]]:
    return {str(r[0]): str(r[1]) for r in (yield from fetch_in(_LAST_REASONS, user_ids))}


def plan_surveys(v: Values, book: Book, planner: Planner, now: datetime,
                 triggers: dict[str, Trigger] | None = None
                 ) -> Steps[list[tuple[str, datetime]]]:
    """Schedules (or records why not) a survey for each identified or triggered user; returns
    the (user, due) pairs scheduled, to be logged once committed. Users of this group that
    share an address count as surveyed by the first one scheduled."""
    triggers = triggers or {}
    user_ids = sorted(u for u in {*book.identified, *triggers} if u in book.users)
    history = yield from survey_history(v, user_ids)
    keys = {u: k for u in user_ids if (k := email_key(book.users[u]["email"])) is not None}
    by_address = yield from address_history(v, keys)
    previous = yield from last_reasons(user_ids)
    surveys: list[tuple[Any, ...]] = []
    decisions: list[tuple[Any, ...]] = []
    scheduled: list[tuple[str, datetime]] = []
    planned: set[str] = set()  # addresses given a survey in this group
    for user_id in user_ids:
        key = keys.get(user_id)
        pending, surveyed_at = by_address.get(user_id, (False, None))
        own = history[user_id]
        seen = SurveyHistory(own.has_pending, own.last_survey_at,
                             address_pending=pending or key in planned,
                             address_surveyed_at=surveyed_at)
        plan = planner(book.users[user_id], seen, now, identified=user_id in book.identified,
                       trigger=triggers.get(user_id))
        if plan.action == "schedule" and plan.due_at is not None:
            token = new_token()
            surveys.append((user_id, token, "survey", SurveyState.PENDING, v.ts(plan.due_at),
                            v.ts(now), 0, 0, 0, v.flag(False), key))
            decisions.append((user_id, v.ts(now), "scheduled", plan.reason, token))
            scheduled.append((user_id, plan.due_at))
            if key is not None:
                planned.add(key)
        elif previous.get(user_id) != plan.reason:
            # Identifies repeat on every page load: log a skip only when the reason changes.
            decisions.append((user_id, v.ts(now), "skipped", plan.reason, None))
    yield from many("INSERT INTO surveys (user_id, token, kind, state, due_at, created_at, "
                    "attempts, answer_revision, synced_revision, needs_sync, email_key) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", surveys)
    # A scheduled decision names its survey (found by the token it was just given).
    yield from many("INSERT INTO decisions (user_id, at, outcome, reason, survey_id) "
                    "VALUES (?, ?, ?, ?, (SELECT id FROM surveys WHERE token = ?))", decisions)
    return scheduled
