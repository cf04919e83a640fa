"""The console's customer-book reads: accounts with names and NPS (sortable, paged),
customer search by id, email or name, and the send-queue preview (who will be asked in the
next days, when and why, and who was skipped lately and why), from the pending surveys' due
times and the decision log."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from storage.console_reads import account_name
from storage.db import Database, utc, utc_required
from storage.reads import _figures
from storage.sqlutil import ACCOUNT_TOTALS, ACCOUNTS, DECISIONS, MEMBERSHIPS, SURVEYS, USERS
from storage.timeparse import iso

ACCOUNT_SORTS = ("name", "members", "nps", "responses", "last_answer")


async def all_accounts(db: Database) -> list[dict[str, Any]]:
    """Every account with its name, members and NPS: the accounts joined to their running
    totals (storage/nps_totals.py), one row each."""
    t = ACCOUNT_TOTALS
    async with db.read() as conn:
        rows = (await conn.execute(
            sa.select(ACCOUNTS.c.group_id, ACCOUNTS.c.traits, t.c.members, t.c.promoters,
                      t.c.passives, t.c.detractors, t.c.last_answer_at)
            .outerjoin(t, t.c.group_id == ACCOUNTS.c.group_id)
            .where(ACCOUNTS.c.deleted_at.is_(None)))).all()
    out = []
    for r in rows:
        gid, traits, members, p, n, d, last = tuple[Any, ...](r)
        f = _figures(int(p or 0), int(n or 0), int(d or 0), 0)
        out.append({"groupId": gid, "name": account_name(str(traits)),
                    "members": int(members or 0), "nps": f["nps"],
                    "promoters": f["promoters"], "passives": f["passives"],
                    "detractors": f["detractors"], "responses": f["responses"],
                    "last_answer": iso(utc(last))})
    return out


def sort_page(rows: list[dict[str, Any]], sort: str = "name", descending: bool = False,
              limit: int = 100, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """A page of accounts sorted by `sort`, and how many accounts there are."""
    key = {"name": lambda a: ((a["name"] or a["groupId"]).lower(), a["groupId"]),
           "members": lambda a: (a["members"], a["groupId"]),
           "nps": lambda a: (a["nps"] is not None, a["nps"] or 0, a["groupId"]),
           "responses": lambda a: (a["responses"], a["groupId"]),
           "last_answer": lambda a: (a["last_answer"] or "", a["groupId"])}[sort]
    ordered = sorted(rows, key=key, reverse=descending)
    return ordered[offset:offset + limit], len(ordered)


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
    """Users whose id is `q`, or whose email or name starts with it (index range scans: a
    substring search over a million users would read them all)."""
    q = q.strip()
    if not q:
        return []
    end = q + "\U0010ffff"
    conds = [USERS.c.user_id == q, sa.and_(USERS.c.email >= q.lower(), USERS.c.email < end.lower()),
             sa.and_(USERS.c.name >= q, USERS.c.name < end)]
    if q[:1].islower():
        cap = q[:1].upper() + q[1:]
        conds.append(sa.and_(USERS.c.name >= cap, USERS.c.name < cap + "\U0010ffff"))
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
