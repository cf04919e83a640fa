"""A small customer book for the console tests (integration and browser): accounts with
names, users, answered and pending surveys and decisions, written straight into the store
the pages read (the intake's own tests cover how they get there)."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from storage import nps_totals
from storage.db import Database
from storage.dialect import dialect_for
from storage.fast_path import Values, run_async
from storage.sqlutil import ACCOUNTS, DECISIONS, MEMBERSHIPS, SURVEYS, USERS

VIEWER = "viewer-token-for-tests"
SCRIPT_COMMENT = "<script>alert('x')</script> slow exports"
FORMULA_COMMENT = "=HYPERLINK(\"http://evil.example\",\"click\")"
# (user, name, email, account, score, comment, days ago)
ANSWERS = [
    ("u1", "Ann Lee", "ann@initech.example", "acc-1", 10, "Love it", 1),
    ("u2", "Bob Roe", "bob@initech.example", "acc-1", 9, None, 3),
    ("u3", "Cy Poe", "cy@globex.example", "acc-2", 8, "Fine", 10),
    ("u4", "Di Fox", "di@globex.example", "acc-2", 3, SCRIPT_COMMENT, 12),
    ("u5", "Ed Kim", "ed@globex.example", "acc-2", 0, FORMULA_COMMENT, 40),
    ("u6", "Flo Nye", "flo@hooli.example", "acc-3", 6, "-1 for the price", 100),
    ("u7", "Gus Orr", "gus@hooli.example", "acc-3", 7, "@team ok", 200),
]
ACCOUNT_NAMES = {"acc-1": "Initech", "acc-2": "Globex", "acc-3": "Hooli"}


async def seed_book(db: Database, now: datetime) -> None:
    async with db.write() as conn:
        await conn.execute(sa.insert(ACCOUNTS), [
            {"group_id": g, "traits": json.dumps({"name": n, "plan": "pro"}), "updated_at": now,
             "created_at": now - timedelta(days=400)} for g, n in ACCOUNT_NAMES.items()])
        users: list[dict[str, Any]] = []
        surveys: list[dict[str, Any]] = []
        for i, (uid, name, email, _acc, score, comment, ago) in enumerate(ANSWERS):
            at = now - timedelta(days=ago)
            first, last = name.split()
            users.append({"user_id": uid, "email": email, "name": name, "first_name": first,
                          "last_name": last, "traits": json.dumps({"email": email,
                                                                  "name": name}),
                          "updated_at": now, "first_seen": at - timedelta(days=30),
                          "last_seen": at, "event_count": 5 + i})
            surveys.append({"user_id": uid, "token": f"tok-{uid}", "state": "answered",
                            "due_at": at - timedelta(hours=2), "created_at": at,
                            "sent_at": at - timedelta(hours=1), "answered_at": at,
                            "score": score, "comment": comment})
        for uid, name, email in (("u8", "Hal Ide", "hal@hooli.example"),
                                 ("u9", "Ivy Ng", "ivy@initech.example")):
            users.append({**users[0], "user_id": uid, "email": email, "name": name,
                          "first_name": name.split()[0], "last_name": name.split()[1],
                          "traits": "{}"})
        surveys.append({**surveys[0], "user_id": "u8", "token": "tok-u8", "state": "sent",
                        "due_at": now - timedelta(days=2), "sent_at": now - timedelta(days=2),
                        "answered_at": None, "score": None, "comment": None})
        surveys.append({**surveys[0], "user_id": "u9", "token": "tok-u9", "state": "pending",
                        "due_at": now + timedelta(days=2), "sent_at": None,
                        "answered_at": None, "score": None, "comment": None})
        await conn.execute(sa.insert(USERS), users)
        await conn.execute(sa.insert(SURVEYS), surveys)
        await conn.execute(sa.insert(MEMBERSHIPS), [
            {"user_id": u[0], "group_id": u[3], "changed_at": now} for u in ANSWERS]
            + [{"user_id": "u9", "group_id": "acc-1", "changed_at": now}])
        await conn.execute(sa.insert(DECISIONS), [
            {"user_id": "u9", "at": now - timedelta(days=1), "outcome": "scheduled",
             "reason": "scheduled for 2026-03-04 09:00 UTC: 14 days after signup"},
            {"user_id": "u8", "at": now - timedelta(days=3), "outcome": "scheduled",
             "reason": "scheduled for 2026-02-28 09:00 UTC: at once"},
            {"user_id": "u8", "at": now - timedelta(days=2), "outcome": "sent",
             "reason": "sent to the address on file"},
            {"user_id": "u4", "at": now - timedelta(days=26), "outcome": "scheduled",
             "reason": "scheduled for 2026-11-19 09:00 Europe/Berlin: 14 days after signup, "
                       "in the send window"},
            {"user_id": "u4", "at": now - timedelta(days=13), "outcome": "sent",
             "reason": "sent to the address on file"},
            {"user_id": "u4", "at": now - timedelta(days=6), "outcome": "skipped",
             "reason": "skipped: no reminder, the survey is answered"},
            {"user_id": "u3", "at": now - timedelta(hours=5), "outcome": "skipped",
             "reason": "skipped: surveyed 10 days ago (re-survey interval 26 weeks)"},
        ])
        await rebuild_totals(conn)


CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found is not None, html[:500]
    return found.group(1)


async def seed_history(db: Database, now: datetime, weeks: int = 26, per_week: int = 6) -> None:
    """Older answers, a few a week, so the trend chart has a shape (scores drift upwards)."""
    rows: list[dict[str, Any]] = []
    users: list[dict[str, Any]] = []
    for w in range(weeks):
        for k in range(per_week):
            uid = f"h{w}-{k}"
            at = now - timedelta(weeks=w + 1, hours=k * 7)
            score = max(0, [10, 9, 9, 8, 7, 3][k] - (4 if (w + k) % 5 == 0 else 0))
            users.append({"user_id": uid, "email": f"{uid}@example.com", "name": None,
                          "traits": "{}", "updated_at": now})
            rows.append({"user_id": uid, "token": f"tok-{uid}", "state": "answered",
                         "due_at": at, "created_at": at, "sent_at": at, "answered_at": at,
                         "score": score, "comment": None})
    async with db.write() as conn:
        await conn.execute(sa.insert(USERS), users)
        await conn.execute(sa.insert(SURVEYS), rows)
        await rebuild_totals(conn)


async def rebuild_totals(conn: AsyncConnection) -> None:
    """Rows written straight into the tables: the running totals are rebuilt from them."""
    dialect = dialect_for(conn.engine.url.render_as_string(hide_password=False))
    await run_async(nps_totals.rebuild(Values(dialect)), conn)
