"""What customers do with a survey link: open it, answer (and revise), unsubscribe."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from storage import deliveries
from storage.db import Database, utc
from storage.deliveries import AnswerFacts, LoopPolicy
from storage.fast_path import Values, run_async
from storage.nps_totals import Counted, record_change
from storage.sqlutil import DECISIONS, SURVEYS, USERS
from storage.states import ENDED, UNSENT, AnswerResult, Openness, SurveyState

_TOKEN = re.compile(r"[A-Za-z0-9_-]+")  # survey_plan issues secrets.token_urlsafe tokens


@dataclass(frozen=True)
class SurveyView:
    id: int
    user_id: str
    state: SurveyState
    score: int | None
    comment: str | None
    expires_at: datetime | None
    unsubscribed: bool
    locale: str | None = None  # the recipient's, for the page's language
    first_name: str | None = None

    def openness(self, now: datetime) -> Openness:
        """What its link shows at `now`: an unsent survey is unknown to the customer."""
        if self.state in UNSENT:
            return Openness.UNKNOWN
        if self.state in ENDED or (self.expires_at is not None and now >= self.expires_at):
            return Openness.CLOSED
        return Openness.ANSWERED if self.state == SurveyState.ANSWERED else Openness.OPEN


async def survey_by_token(db: Database, token: str) -> SurveyView | None:
    if not token or len(token) > 128 or not _TOKEN.fullmatch(token):
        return None  # not one we issued (and NUL or surrogates would trouble the database)
    async with db.read() as conn:
        row = (await conn.execute(
            sa.select(SURVEYS.c.id, SURVEYS.c.user_id, SURVEYS.c.state, SURVEYS.c.score,
                      SURVEYS.c.comment, SURVEYS.c.expires_at, USERS.c.unsubscribed_at,
                      USERS.c.locale, USERS.c.first_name, SURVEYS.c.handoff_at)
            .outerjoin(USERS, USERS.c.user_id == SURVEYS.c.user_id)
            .where(SURVEYS.c.token == token))).first()
    if row is None:
        return None
    state = SurveyState(row.state)
    if state == SurveyState.SENDING and row.handoff_at is not None:
        # Given to SMTP and not yet recorded sent: the customer may already hold the email.
        state = SurveyState.SENT
    return SurveyView(row.id, row.user_id, state, row.score, row.comment,
                      utc(row.expires_at), row.unsubscribed_at is not None, row.locale,
                      row.first_name)


async def record_answer(
    db: Database, token: str, score: int, comment: str | None, now: datetime,
    loop: LoopPolicy | None = None,
) -> AnswerResult:
    """Record or revise the answer to the survey `token` names while it is open at `now`;
    every revision is synced back again. `loop`: the alerts and webhooks it causes, written
    in the same transaction (storage/deliveries.py)."""
    is_open = (SURVEYS.c.token == token,
               sa.or_(SURVEYS.c.state.in_((SurveyState.SENT, SurveyState.ANSWERED)),
                      sa.and_(SURVEYS.c.state == SurveyState.SENDING,
                              SURVEYS.c.handoff_at.is_not(None))),
               sa.or_(SURVEYS.c.expires_at.is_(None), SURVEYS.c.expires_at > now))
    async with db.write() as conn:
        # The row as it was (locked on PostgreSQL): the running totals move from it.
        old = (await conn.execute(
            sa.select(SURVEYS.c.id, SURVEYS.c.user_id, SURVEYS.c.kind, SURVEYS.c.sent_at,
                      SURVEYS.c.score, SURVEYS.c.answered_at).where(*is_open)
            .with_for_update())).first()
        if old is None:
            return AnswerResult.CLOSED
        row = (await conn.execute(
            sa.update(SURVEYS).where(SURVEYS.c.id == old.id)
            .values(state=SurveyState.ANSWERED, score=score, comment=comment, answered_at=now,
                    answer_revision=SURVEYS.c.answer_revision + 1, needs_sync=True,
                    reminder_due_at=None)
            .returning(SURVEYS.c.id, SURVEYS.c.user_id, SURVEYS.c.answer_revision))).one()
        if old.kind == "survey":
            before = Counted(old.user_id, utc(old.sent_at), old.score, utc(old.answered_at))
            await run_async(record_change(Values(db.dialect), [before],
                                          [before.answered(score, now)]), conn)
        await conn.execute(sa.insert(DECISIONS).values(
            user_id=row.user_id, at=now, survey_id=row.id, outcome="answered",
            reason=f"answered {score}" + (" (revised)" if row.answer_revision > 1 else "")))
        if loop is not None and loop.active:
            email, name, accounts = await deliveries.person(conn, row.user_id)
            await deliveries.insert_now(conn, loop.on_answer(AnswerFacts(
                row.id, row.user_id, email, name, accounts, score, old.score, comment,
                row.answer_revision, now)), now)
        return AnswerResult.RECORDED


async def unsubscribe(db: Database, user_id: str, now: datetime,
                      loop: LoopPolicy | None = None) -> bool:
    """Unsubscribe at once; pending surveys are cancelled. Idempotent. `loop`: the
    `user.unsubscribed` webhooks, written in the same transaction."""
    async with db.write() as conn:
        result = await conn.execute(
            sa.update(USERS).where(USERS.c.user_id == user_id, USERS.c.unsubscribed_at.is_(None))
            .values(unsubscribed_at=now, unsubscribe_synced=False, updated_at=now))
        await conn.execute(
            sa.update(SURVEYS)
            .where(SURVEYS.c.user_id == user_id, SURVEYS.c.state == SurveyState.PENDING)
            .values(state=SurveyState.CANCELLED))
        await conn.execute(
            sa.update(SURVEYS).where(SURVEYS.c.user_id == user_id)
            .values(reminder_due_at=None))
        if result.rowcount:
            await conn.execute(sa.insert(DECISIONS).values(
                user_id=user_id, at=now, outcome="unsubscribed",
                reason="unsubscribed from the survey email"))
            if loop is not None and loop.active:
                email, _, _ = await deliveries.person(conn, user_id)
                await deliveries.insert_now(conn, loop.on_unsubscribe(user_id, email, now), now)
        return bool(result.rowcount)
