"""The console's customer-book reads: accounts with names and NPS (sortable, paged),
customer search by id, email or name, and the send-queue preview (who will be asked in the
next days, when and why, and who was skipped lately and why), from the pending surveys' due
times and the decision log."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from storage.db import Database, utc, utc_required
from storage.reads import _figures
from storage.sqlutil import ACCOUNT_TOTALS, DECISIONS, MEMBERSHIPS, SURVEYS, USERS
from storage.timeparse import iso

ACCOUNT_SORTS = ("name", "members", "nps", "responses", "last_answer")


async def accounts_page(db: Database, sort: str = "name", descending: bool = False,
                        limit: int = 100, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """A page of the accounts (not deleted) sorted by `sort`, ties by groupId, and how many
    there are: an index walk of the accounts list's read model (storage/nps_totals.py)."""
    t = ACCOUNT_TOTALS
    key = {"name": t.c.sort_name, "members": t.c.members, "nps": t.c.nps,
           "responses": t.c.responses, "last_answer": t.c.last_answer_at}[sort]
    if sort == "last_answer":  # never answered sorts lowest, on both backends
        first = key.desc().nulls_last() if descending else key.asc().nulls_first()
    else:
        first = key.desc() if descending else key.asc()
    live = t.c.live.is_(True)
    async with db.read() as conn:
        rows = (await conn.execute(
            sa.select(t).where(live)
            .order_by(first, t.c.group_id.desc() if descending else t.c.group_id.asc())
            .limit(limit).offset(offset))).all()
        count = int((await conn.execute(sa.select(sa.func.count()).where(live))).scalar() or 0)
    out = []
    for r in rows:
        f = _figures(int(r.promoters), int(r.passives), int(r.detractors), 0)
        out.append({"groupId": r.group_id, "name": r.name, "members": int(r.members),
                    "nps": f["nps"], "promoters": f["promoters"], "passives": f["passives"],
                    "detractors": f["detractors"], "responses": f["responses"],
                    "last_answer": iso(utc(r.last_answer_at))})
    return out, count


async def members(db: Database, group_id: str, limit: int = 200) -> list[dict[str, Any]]:
    async with db.read() as conn:
        rows = (await conn.execute(
            sa.select(USERS.c.user_id, USERS.c.email, USERS.c.name, USERS.c.last_seen)
            .join(MEMBERSHIPS, MEMBERSHIPS.c.user_id == USERS.c.user_id)
            .where(MEMBERSHIPS.c.group_id == group_id, MEMBERSHIPS.c.active.is_(True))
            .order_by(USERS.c.user_id).limit(limit))).all()
    return [{"user_id": r.user_id, "email": r.email, "name": r.name,
             "last_seen": iso(utc(r.last_seen))} for r in rows]


async def search_users(db: Database, q: str, limit: int = 50) -> list[dict[str, Any]]:
    """Users whose id is `q`, or whose email, name or last name starts with it (index range
    scans: a substring search over a million users would read them all)."""
    q = q.strip()
    if not q:
        return []
    end = q + "\U0010ffff"
    conds = [USERS.c.user_id == q, sa.and_(USERS.c.email >= q.lower(), USERS.c.email < end.lower())]
    starts = [q] + ([q[:1].upper() + q[1:]] if q[:1].islower() else [])
    for start in starts:
        for column in (USERS.c.name, USERS.c.last_name):
            conds.append(sa.and_(column >= start, column < start + "\U0010ffff"))
    async with db.read() as conn:
        rows = (await conn.execute(
            sa.select(USERS.c.user_id, USERS.c.email, USERS.c.name, USERS.c.first_name,
                      USERS.c.last_name, USERS.c.last_seen)
            .where(sa.or_(*conds), USERS.c.anonymous.is_(False))
            .order_by(USERS.c.user_id).limit(limit))).all()
    return [{"user_id": r.user_id, "email": r.email,
             "name": r.name or " ".join(x for x in (r.first_name, r.last_name) if x) or None,
             "last_seen": iso(utc(r.last_seen))} for r in rows]


async def queue(db: Database, now: datetime, days: int = 7,
                limit: int = 200) -> dict[str, Any]:
    """Pending surveys due before now + `days` (soonest first) with the reason logged when
    each was scheduled, and the latest skips with their reasons."""
    horizon = now + timedelta(days=days)
    async with db.read() as conn:
        due = (await conn.execute(
            sa.select(SURVEYS.c.id, SURVEYS.c.user_id, SURVEYS.c.kind, SURVEYS.c.due_at,
                      USERS.c.email, USERS.c.name)
            .outerjoin(USERS, USERS.c.user_id == SURVEYS.c.user_id)
            .where(SURVEYS.c.state == "pending", SURVEYS.c.due_at < horizon)
            .order_by(SURVEYS.c.due_at, SURVEYS.c.id).limit(limit))).all()
        total = int((await conn.execute(sa.select(sa.func.count()).where(
            SURVEYS.c.state == "pending", SURVEYS.c.due_at < horizon))).scalar() or 0)
        why: dict[str, str] = {}
        users = sorted({r.user_id for r in due})
        for i in range(0, len(users), 2000):
            for row in await conn.execute(
                    sa.select(DECISIONS.c.user_id, DECISIONS.c.reason)
                    .where(DECISIONS.c.user_id.in_(users[i:i + 2000]),
                           DECISIONS.c.outcome == "scheduled").order_by(DECISIONS.c.id)):
                why[str(row[0])] = str(row[1])  # the latest scheduling wins
        skipped = (await conn.execute(
            sa.select(DECISIONS.c.user_id, DECISIONS.c.at, DECISIONS.c.reason)
            .where(DECISIONS.c.outcome == "skipped")
            .order_by(DECISIONS.c.at.desc(), DECISIONS.c.id.desc()).limit(limit))).all()
    return {
        "days": days, "total_due": total,
        "due": [{"survey_id": r.id, "user_id": r.user_id, "email": r.email, "name": r.name,
                 "kind": r.kind, "due_at": iso(utc(r.due_at)),
                 "overdue": utc_required(r.due_at) <= now, "why": why.get(r.user_id)} for r in due],
        "skipped": [{"user_id": r.user_id, "at": iso(utc(r.at)), "reason": r.reason}
                    for r in skipped],
    }
