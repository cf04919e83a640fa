"""Read models for the console and GET /v1/responses: the dashboard's figures and trend,
answers filtered and paged by a keyset cursor (answered_at, id: stable while answers arrive,
and an index seek at any depth), accounts with their stored names, customer search and the
send-queue preview. Plain async functions over the Database, like storage/reads.py."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.db import Database, utc, utc_required
from storage.nps_totals import account_name
from storage.reads import _figures
from storage.sqlutil import ACCOUNTS, DAYS, MEMBERSHIPS, SURVEYS, USERS
from storage.timeparse import iso

CATEGORIES = {"promoter": (9, 10), "passive": (7, 8), "detractor": (0, 6)}
MAX_LIMIT = 500


class BadCursor(ValueError):
    """A cursor this npsd did not hand out."""


@dataclass(frozen=True)
class Filters:
    category: str | None = None
    score_min: int | None = None
    score_max: int | None = None
    account: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    q: str | None = None


def category(score: int) -> str:
    return "promoter" if score >= 9 else "passive" if score >= 7 else "detractor"


def encode_cursor(at: datetime, survey_id: int) -> str:
    raw = f"{at.astimezone(UTC).isoformat()}|{survey_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, _, sid = raw.partition("|")
        stamp = datetime.fromisoformat(at)
        if stamp.tzinfo is None:
            raise ValueError(at)
        return stamp, int(sid)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadCursor("cursor is not one this server handed out") from exc


async def dashboard(db: Database, now: datetime, by: str = "week") -> dict[str, Any]:
    """NPS overall and over the last 30 / 90 days (by answer time; `sent` by send time), and
    the trend: one point per week (Monday) or month of answers, oldest first. Read from the
    running totals per day (storage/nps_totals.py): a few hundred rows whatever the book."""
    async with db.read() as conn:
        days = await day_totals(conn)
    answered = [(day, score, row[slot]) for day, row in days
                for slot, score in ((0, 10), (1, 8), (2, 0)) if row[slot]]
    sent = [(day, row[3]) for day, row in days if row[3]]
    d30, d90 = (now - timedelta(days=30)).date(), (now - timedelta(days=90)).date()
    # A window starts at a day boundary: the day 30 days ago counts in full.
    windows = {"overall": date.min, "last_90_days": d90, "last_30_days": d30}
    out: dict[str, Any] = {}
    for name, start in windows.items():
        p, n, d = (sum(row[i] for day, row in days if day >= start) for i in range(3))
        out[name] = _figures(p, n, d, sum(c for day, c in sent if day >= start))
    return {**out, "by": by, "trend": _trend(answered, by)}


async def day_totals(conn: AsyncConnection) -> list[tuple[date, tuple[int, int, int, int]]]:
    """(day, (promoters, passives, detractors, sent)) per UTC day, oldest first."""
    sums = (sa.func.sum(c) for c in (DAYS.c.promoters, DAYS.c.passives, DAYS.c.detractors,
                                     DAYS.c.sent))  # over the day's shards
    rows = await conn.execute(sa.select(DAYS.c.day, *sums).group_by(DAYS.c.day)
                              .order_by(DAYS.c.day))
    return [(date.fromisoformat(str(r[0])), (int(r[1]), int(r[2]), int(r[3]), int(r[4])))
            for r in rows]


def _trend(answered: list[tuple[date, int, int]], by: str) -> list[dict[str, Any]]:
    buckets: dict[str, list[int]] = {}
    for day, score, count in answered:
        key = (day.strftime("%Y-%m") if by == "month"
               else (day - timedelta(days=day.weekday())).isoformat())
        b = buckets.setdefault(key, [0, 0, 0])
        b[0 if score >= 9 else 1 if score >= 7 else 2] += count
    out = []
    for key in sorted(buckets):
        b = buckets[key]
        f = _figures(b[0], b[1], b[2], 0)
        out.append({"period": key, "nps": f["nps"], "responses": f["responses"]})
    return out


def _filtered(f: Filters) -> Any:
    query = sa.select(SURVEYS.c.id, SURVEYS.c.user_id, SURVEYS.c.score, SURVEYS.c.comment,
                      SURVEYS.c.answered_at, USERS.c.email, USERS.c.name, USERS.c.first_name,
                      USERS.c.last_name) \
        .select_from(SURVEYS.outerjoin(USERS, USERS.c.user_id == SURVEYS.c.user_id)) \
        .where(SURVEYS.c.answered_at.is_not(None), SURVEYS.c.score.is_not(None))
    if f.category is not None:
        low, high = CATEGORIES[f.category]
        query = query.where(SURVEYS.c.score.between(low, high))
    if f.score_min is not None:
        query = query.where(SURVEYS.c.score >= f.score_min)
    if f.score_max is not None:
        query = query.where(SURVEYS.c.score <= f.score_max)
    if f.since is not None:
        query = query.where(SURVEYS.c.answered_at >= f.since)
    if f.until is not None:
        query = query.where(SURVEYS.c.answered_at < f.until)
    if f.account:
        query = query.where(SURVEYS.c.user_id.in_(
            sa.select(MEMBERSHIPS.c.user_id).where(MEMBERSHIPS.c.group_id == f.account,
                                                   MEMBERSHIPS.c.active.is_(True))))
    if f.q:
        like = "%" + f.q.lower().replace("\\", "\\\\").replace("%", "\\%").replace(
            "_", "\\_") + "%"
        query = query.where(sa.or_(*(sa.func.lower(c).like(like, escape="\\") for c in (
            SURVEYS.c.comment, USERS.c.email, USERS.c.name, USERS.c.first_name,
            USERS.c.last_name))))
    return query


async def responses(db: Database, f: Filters, limit: int = 50, cursor: str | None = None,
                    ) -> tuple[list[dict[str, Any]], str | None]:
    """Answers newest first, `limit` of them after `cursor`; the cursor of the next page (None
    on the last). Each answer names the accounts its user is in."""
    query = _filtered(f)
    if cursor is not None:
        at, sid = decode_cursor(cursor)
        query = query.where(sa.or_(SURVEYS.c.answered_at < at, sa.and_(
            SURVEYS.c.answered_at == at, SURVEYS.c.id < sid)))
    query = query.order_by(SURVEYS.c.answered_at.desc(), SURVEYS.c.id.desc()).limit(limit + 1)
    async with db.read() as conn:
        rows = (await conn.execute(query)).all()
        more = len(rows) > limit
        rows = rows[:limit]
        accounts = await _accounts_of(conn, sorted({r.user_id for r in rows}))
    out = [_response(r, accounts.get(r.user_id, [])) for r in rows]
    last = rows[-1] if more and rows else None
    if last is None:
        return out, None
    return out, encode_cursor(utc_required(last.answered_at), last.id)


def _response(r: Any, accounts: list[str]) -> dict[str, Any]:
    name = r.name or " ".join(x for x in (r.first_name, r.last_name) if x) or None
    return {"id": r.id, "answered_at": iso(utc(r.answered_at)), "user_id": r.user_id,
            "email": r.email, "name": name, "accounts": accounts, "score": r.score,
            "category": category(r.score), "comment": r.comment}


async def _accounts_of(conn: AsyncConnection, user_ids: list[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    if not user_ids:
        return found
    for row in await conn.execute(
            sa.select(MEMBERSHIPS.c.user_id, MEMBERSHIPS.c.group_id)
            .where(MEMBERSHIPS.c.user_id.in_(user_ids), MEMBERSHIPS.c.active.is_(True))
            .order_by(MEMBERSHIPS.c.group_id)):
        found.setdefault(str(row[0]), []).append(str(row[1]))
    return found


async def account_names(db: Database, group_ids: list[str]) -> dict[str, str | None]:
    """The stored `name` trait of each account (for reports that list account ids)."""
    names: dict[str, str | None] = {}
    async with db.read() as conn:
        for part in [group_ids[i:i + 2000] for i in range(0, len(group_ids), 2000)]:
            for row in await conn.execute(
                    sa.select(ACCOUNTS.c.group_id, ACCOUNTS.c.traits)
                    .where(ACCOUNTS.c.group_id.in_(part))):
                names[str(row[0])] = account_name(row[1])
    return names
