"""One commit of the dispatcher's hand-off journal (jobs.handoff), as SQL steps.

The journal commits for every few messages (one mark and one outcome per SMTP connection),
so the commit itself must be cheap: written as `storage.sql_steps` plans, it runs on SQLite
in the writer connection's own thread (one thread hop for the whole transaction, instead of
several per statement through SQLAlchemy's async layer, which under load cost more than the
work) and on PostgreSQL through asyncpg. The same rules as storage.surveys: outcomes of
claims (sent, retry, failed), the hand-off marks with their checks, the lease renewal.
"""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from storage.db import Database
from storage.fast_path import Fetch, Many, Steps, Values, run_async
from storage.nps_totals import Counted, record_change
from storage.sqlite_writer import run_transaction
from storage.sqlutil import chunks
from storage.states import SurveyState
from storage.surveys import REMINDER_LEASE, Outcome

_SENT = (
    "UPDATE surveys SET sent_at = ?, expires_at = ?, lease_owner = NULL, lease_until = NULL, "
    "last_error = NULL, "
    # Answered between its hand-off and now (a quick customer): it stays answered.
    "state = CASE WHEN state = 'answered' THEN state ELSE 'sent' END, "
    "reminder_due_at = CASE WHEN state = 'answered' THEN reminder_due_at ELSE ? END "
    "WHERE id IN ({ids})")
_PENDING = (
    "UPDATE surveys SET state = 'pending', due_at = ?, handoff_at = NULL, lease_owner = NULL, "
    "lease_until = NULL, last_error = ?, attempts = attempts + ? WHERE id = ?")
_FINAL = ("UPDATE surveys SET state = ?, lease_owner = NULL, lease_until = NULL, "
          "last_error = ? WHERE id = ?")
# A reminder skipped or failed is not tried again: it is no longer due, nor claimed, nor
# (its hand-off mark undone) sent.
_REMINDER_FAILED = ("UPDATE surveys SET last_error = ?, reminder_due_at = NULL, "
                    "reminder_sent_at = NULL, lease_owner = NULL, lease_until = NULL "
                    "WHERE id = ?")
_REMINDER_SENT = ("UPDATE surveys SET reminder_due_at = NULL, lease_owner = NULL, "
                  "lease_until = NULL WHERE id = ?")
# The surveys of a commit's outcomes as they are: which still exist (an erasure may have
# deleted one while it was out: it leaves no decision behind) and what the running totals
# knew of them. Locked (PostgreSQL) so an erasure waits for this commit. The kind is checked
# in Python: with `kind = …` as an index term SQLite's planner walked every survey of the
# kind (ix_surveys_kind_sent) once per commit instead of looking the ids up.
_ROWS = ("SELECT id, user_id, sent_at, score, answered_at, kind FROM surveys "
         "WHERE id IN ({ids}){lock}")
_DECISION = ("INSERT INTO decisions (user_id, at, survey_id, outcome, reason) "
             "VALUES (?, ?, ?, ?, ?)")
# The commit that gives surveys to SMTP re-checks, in the same statement, that each is still
# ours (not deleted by an erasure that committed first), that its user still exists, is not
# suppressed nor unsubscribed, and that its address had no survey in the interval.
# COALESCE keeps SQLite's planner on the id and email_key indexes: with `state = …` and
# `kind = …` as index terms it scanned every survey of the kind for each mark (100,000
# rows per mark in bench/dispatch.py).
_PERSON_OK = (
    "AND EXISTS (SELECT 1 FROM users WHERE users.user_id = surveys.user_id "
    "AND users.unsubscribed_at IS NULL) "
    "AND NOT EXISTS (SELECT 1 FROM suppressions WHERE suppressions.user_id = surveys.user_id)")
_MARK = (
    "UPDATE surveys SET handoff_at = ?, lease_until = ? WHERE id IN ({ids}) "
    "AND lease_owner = ? AND COALESCE(state, '') = 'sending' AND handoff_at IS NULL "
    + _PERSON_OK + "{address} RETURNING id")
_ADDRESS = (
    " AND NOT EXISTS (SELECT 1 FROM surveys AS other WHERE other.email_key = surveys.email_key "
    "AND other.id <> surveys.id AND COALESCE(other.kind, '') = 'survey' "
    "AND (other.sent_at >= ? "
    "OR (other.state = 'sending' AND other.handoff_at IS NOT NULL)))")
# A reminder's hand-off: its row stays "sent" and leased; reminder_sent_at is the mark, and
# its outcome clears reminder_due_at (storage.surveys takes a dead holder's marks back).
_MARK_REMINDER = (
    "UPDATE surveys SET reminder_sent_at = ?, lease_until = ? WHERE id IN ({ids}) "
    "AND lease_owner = ? AND COALESCE(state, '') = 'sent' AND reminder_due_at IS NOT NULL "
    "AND reminder_sent_at IS NULL " + _PERSON_OK + " RETURNING id")
_RENEW = "UPDATE surveys SET lease_until = ? WHERE lease_owner = ? AND state = 'sending'"


def _marks(ids: int) -> str:
    return ", ".join("?" * ids)


def settle_steps(v: Values, outcomes: list[Outcome], now: datetime, owner: str,
                 lease: timedelta, handoff: list[int], renew: bool,
                 since: datetime | None, reminders: list[int]) -> Steps[set[int]]:
    """Record `outcomes`, mark `handoff` and `reminders` handed off (returns those still
    ours), renew."""
    yield from _record(v, outcomes, now)
    mine: set[int] = set()
    until = v.ts(now + lease)
    for part in chunks(handoff):
        sql = _MARK.format(ids=_marks(len(part)), address=_ADDRESS if since else "")
        params: list[Any] = [v.ts(now), until, *part, owner]
        if since is not None:
            params.append(v.ts(since))
        mine.update(int(r[0]) for r in (yield Fetch(sql, params)))
    for part in chunks(reminders):
        mine.update(int(r[0]) for r in (yield Fetch(
            _MARK_REMINDER.format(ids=_marks(len(part))),
            [v.ts(now), v.ts(now + REMINDER_LEASE), *part, owner])))
    if renew:
        yield Fetch(_RENEW, (until, owner))
    return mine


def _record(v: Values, outcomes: list[Outcome], now: datetime) -> Steps[None]:
    if not outcomes:
        return
    sent: dict[tuple[datetime | None, datetime | None], list[int]] = {}
    pending: list[tuple[Any, ...]] = []
    final: list[tuple[Any, ...]] = []
    reminders: list[tuple[Any, ...]] = []
    reminders_sent: list[tuple[Any, ...]] = []
    for o in outcomes:
        if o.reminder:
            if o.state == SurveyState.SENT:
                reminders_sent.append((o.survey_id,))
            else:
                reminders.append((o.reason, o.survey_id))
        elif o.state == SurveyState.SENT:
            sent.setdefault((o.expires_at, o.reminder_due_at), []).append(o.survey_id)
        elif o.state == SurveyState.PENDING:
            pending.append((v.ts(o.due_at), o.reason, 1 if "retry" in o.reason else 0,
                            o.survey_id))
        else:
            final.append((str(o.state), o.reason if o.state == SurveyState.FAILED else None,
                          o.survey_id))
    rows: list[Any] = []
    for part in chunks(sorted({o.survey_id for o in outcomes})):
        rows.extend((yield Fetch(_ROWS.format(ids=_marks(len(part)), lock=v.for_update()),
                                 part)))
    alive = {int(r[0]) for r in rows}
    if sent:
        ids = {i for group in sent.values() for i in group}
        yield from _count_sent(v, [r for r in rows if int(r[0]) in ids and r[5] == "survey"],
                               now)
    for (expires, reminder), ids_of in sent.items():  # usually one group per second
        for part in chunks(ids_of):
            yield Fetch(_SENT.format(ids=_marks(len(part))),
                        (v.ts(now), v.ts(expires), v.ts(reminder), *part))
    for sql, many_rows in ((_PENDING, pending), (_FINAL, final), (_REMINDER_FAILED, reminders),
                           (_REMINDER_SENT, reminders_sent)):
        if many_rows:
            yield Many(sql, many_rows)
    at = v.ts(now)
    decided = [(o.user_id, at, o.survey_id, ("reminder " if o.reminder else "") + str(o.state),
                o.reason) for o in outcomes if o.survey_id in alive]
    if decided:
        yield Many(_DECISION, decided)


def _count_sent(v: Values, rows: list[Any], now: datetime) -> Steps[None]:
    """The running totals (storage.nps_totals) of surveys about to be recorded sent: `rows`
    as _ROWS read them."""
    read = v.time_reader()
    before = [Counted(str(user_id), read(sent_at) if sent_at is not None else None, score,
                      read(answered_at) if answered_at is not None else None)
              for _, user_id, sent_at, score, answered_at, _kind in rows]
    yield from record_change(v, before, [replace(c, sent_at=now) for c in before])


async def settle(db: Database, outcomes: list[Outcome], now: datetime, *, owner: str,
                 lease: timedelta, handoff: list[int] | None = None, renew: bool = True,
                 interval: timedelta | None = None,
                 reminders: list[int] | None = None) -> set[int]:
    """One commit of the hand-off journal: record the outcomes of a few messages sent,
    mark the next ones handed off (their SMTP transactions start now: returns the ids still
    ours to send) and renew this owner's leases. `interval` (survey.resurvey_interval) makes
    the mark refuse an address surveyed within it."""
    since = now - interval if interval is not None else None
    steps = settle_steps(Values(db.dialect, now), outcomes, now, owner, lease,
                         handoff or [], renew, since, reminders or [])
    if not db.dialect.writer_thread:
        async with db.write() as conn:
            return await run_async(steps, conn)
    result: set[int] = set()

    def work(conn: sqlite3.Connection) -> bool:
        result.update(run_transaction(conn, steps))
        return True

    await db.in_writer_thread(work)
    return result


async def record_outcomes(db: Database, outcomes: list[Outcome], now: datetime) -> None:
    """Outcomes decided before sending (skipped, deferred), in one transaction."""
    if outcomes:
        await settle(db, outcomes, now, owner="", lease=timedelta(0), renew=False)
