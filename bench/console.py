"""The console's pages at scale (issue 15): p95 of each page with a big customer book.

    python bench/console.py [--users 1000000] [--answers 200000] [--accounts 20000]
                            [--requests 20]

SQLite (npsd's default store), seeded in bulk with `users` users (each in one of `accounts`
named accounts), `answers` answered surveys spread over the last year (a third with a
comment), 5,000 surveys pending in the next 7 days with their scheduling decisions, and
20,000 skips in the decision log. npsd's app is served on loopback in this process; each
console page is fetched `requests` times in a logged-in session (after one warm-up fetch)
and its p50 / p95 printed. Nothing is cached between fetches: every page reads live (the
dashboard, the accounts list and /v1/nps from the running totals, storage/nps_totals.py,
built after seeding by the schema-5 migration's own rebuild, whose time is printed). The
physical reference, measured in the same run: one plain-sqlite3 scan of every answer grouped
by score (what the dashboard cost before the totals). Target: p95 < 200 ms per page.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sqlite3
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ADMIN, API_KEY, busy_note, machine_line, table, tempdir
from _seed import migrate, sqlite_time

from storage import nps_totals
from storage.dialect import SQLITE
from storage.fast_path import Values, run_sync
from storage.sqlutil import chunks

PAGES = ["/console", "/console?by=month", "/console/responses",
         "/console/responses?category=detractor", "/console/responses?q=slow",
         "/console/responses?account=acct-00042", "/console/accounts",
         "/console/accounts?sort=nps&order=desc", "/console/accounts?sort=members&order=desc",
         "/console/accounts?page=150", "/console/accounts/acct-00042",
         "/console/users?q=user-00012", "/console/users/user-0000007", "/console/queue",
         "/v1/responses?limit=500", "/v1/nps"]


def seed(path: Path, users: int, answers: int, accounts: int) -> tuple[float, float]:
    """Seed in bulk; (seconds seeding, seconds building the running totals)."""
    started = time.perf_counter()
    now = datetime.now(UTC)
    now_s = sqlite_time(now)
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")  # seeding only; npsd uses FULL
    indexes = con.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND "
                          "sql IS NOT NULL").fetchall()
    with con:
        for name, _ in indexes:
            con.execute(f'DROP INDEX "{name}"')
        for part in chunks(range(users), 50_000):
            con.executemany(
                "INSERT INTO users (user_id, anonymous, email, first_name, name, traits, "
                "trait_times, event_count, session_count, unsubscribe_synced, updated_at, "
                "last_seen) VALUES (?, 0, ?, ?, ?, '{}', '{}', 3, 1, 1, ?, ?)",
                ((f"user-{i:07d}", f"user-{i:07d}@example.test", f"F{i}", f"F{i} L{i}",
                  now_s, now_s) for i in part))
            con.executemany(
                "INSERT INTO memberships (user_id, group_id, active, changed_at) "
                "VALUES (?, ?, 1, ?)",
                ((f"user-{i:07d}", f"acct-{i % accounts:05d}", now_s) for i in part))
        con.executemany(
            "INSERT INTO accounts (group_id, traits, trait_times, updated_at) "
            "VALUES (?, ?, '{}', ?)", ((f"acct-{g:05d}", json.dumps({"name": f"Company {g}"}),
                                       now_s) for g in range(accounts)))
        for part in chunks(range(answers), 50_000):
            con.executemany(
                "INSERT INTO surveys (user_id, token, kind, state, due_at, created_at, "
                "sent_at, answered_at, score, comment, attempts, answer_revision, "
                "synced_revision, needs_sync) VALUES (?, ?, 'survey', 'answered', ?, ?, ?, "
                "?, ?, ?, 1, 1, 1, 0)",
                ((f"user-{i:07d}", secrets.token_urlsafe(12),
                  sqlite_time(now - timedelta(minutes=i * 525_600 // answers + 60)),
                  now_s, sqlite_time(now - timedelta(minutes=i * 525_600 // answers + 60)),
                  sqlite_time(now - timedelta(minutes=i * 525_600 // answers)), (i * 7) % 11,
                  ("slow exports" if i % 7 == 0 else f"comment {i}") if i % 3 == 0 else None)
                 for i in part))
        _queue_and_log(con, range(answers, min(users, answers + 5000)), answers, now)
        for _, sql in indexes:
            con.execute(sql)
    seeded = time.perf_counter()
    with con:
        run_sync(nps_totals.rebuild(Values(SQLITE)), con)
    totals = time.perf_counter() - seeded
    con.execute("ANALYZE")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return seeded - started, totals


def reference_scan(path: Path) -> float:
    """ms for one scan of every answer grouped by score, in plain sqlite3 (best of 3)."""
    con = sqlite3.connect(path)
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        con.execute("SELECT substr(answered_at, 1, 10), score, count(*) FROM surveys "
                    "WHERE kind = 'survey' AND answered_at IS NOT NULL GROUP BY 1, 2").fetchall()
        best = min(best, (time.perf_counter() - started) * 1000)
    con.close()
    return best


def _queue_and_log(con: sqlite3.Connection, pending: range, answers: int,
                   now: datetime) -> None:
    """Surveys due in the next 7 days with their scheduling decisions, and 20,000 skips."""
    now_s = sqlite_time(now)
    con.executemany(
        "INSERT INTO surveys (user_id, token, kind, state, due_at, created_at, attempts, "
        "answer_revision, synced_revision, needs_sync) VALUES (?, ?, 'survey', 'pending', "
        "?, ?, 0, 0, 0, 0)",
        ((f"user-{i:07d}", secrets.token_urlsafe(12),
          sqlite_time(now + timedelta(minutes=(i - answers) * 2)), now_s) for i in pending))
    con.executemany(
        "INSERT INTO decisions (user_id, at, outcome, reason) VALUES (?, ?, 'scheduled', "
        "'scheduled for later: 14 days after signup')",
        ((f"user-{i:07d}", now_s) for i in pending))
    con.executemany(
        "INSERT INTO decisions (user_id, at, outcome, reason) VALUES (?, ?, 'skipped', "
        "'skipped: surveyed within the re-survey interval')",
        ((f"user-{i:07d}", sqlite_time(now - timedelta(minutes=i))) for i in range(20_000)))


async def measure(db_path: Path, workdir: Path, requests: int) -> list[list[Any]]:
    from aiohttp.test_utils import TestClient, TestServer

    from daemon.app import create_app
    from daemon.config import parse_settings
    from daemon.runtime import RUNTIME

    settings = parse_settings({
        "storage": {"url": f"sqlite+aiosqlite:///{db_path}"}, "intake": {"api_keys": [API_KEY]},
        "admin": {"token": ADMIN}, "log": {"level": "warning"},
        "email": {"backend": "file", "file_dir": str(workdir / "outbox")}}, "bench")
    app = create_app(settings, run_jobs=False)
    client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    rows = []
    try:
        assert app[RUNTIME] is not None
        form = await (await client.get("/console/login")).text()
        csrf = form.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        done = await client.post("/console/login", data={"token": ADMIN, "csrf": csrf})
        assert done.status == 200, done.status
        for path in PAGES:
            headers = {"Authorization": f"Bearer {ADMIN}"} if path.startswith("/v1") else {}
            times = []
            for n in range(requests + 1):
                started = time.perf_counter()
                response = await client.get(path, headers=headers)
                await response.read()
                assert response.status == 200, (path, response.status)
                if n:  # the first fetch warms SQLite's page cache
                    times.append((time.perf_counter() - started) * 1000)
            times.sort()
            p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
            rows.append([path,
                         f"{statistics.median(times):.1f}", f"{p95:.1f}",
                         "ok" if p95 < 200 else "SLOW"])
    finally:
        await client.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--answers", type=int, default=200_000)
    parser.add_argument("--accounts", type=int, default=20_000)
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    workdir = tempdir("console")
    db_path = workdir / "npsd.db"
    migrate(f"sqlite+aiosqlite:///{db_path}")
    seconds, totals = seed(db_path, args.users, min(args.answers, args.users), args.accounts)
    print(machine_line())
    print(busy_note())
    print(f"seeded {args.users:,} users, {args.answers:,} answers, {args.accounts:,} accounts "
          f"in {seconds:.0f} s (SQLite); running totals built in {totals:.1f} s")
    print(f"reference: one plain-sqlite3 scan of every answer by day and score: "
          f"{reference_scan(db_path):.0f} ms")
    rows = asyncio.run(measure(db_path, workdir, args.requests))
    print(table(rows, ["page", "p50 ms", "p95 ms", "< 200 ms"]))
    print("after: " + busy_note())


if __name__ == "__main__":
    main()
