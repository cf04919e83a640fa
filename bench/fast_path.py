"""Why the intake has a raw-SQL fast path (storage/fast_path.py): the same statements of one
100-message intake group — the events INSERT … ON CONFLICT DO NOTHING RETURNING and the
users' activity UPDATE (executemany) — written as the fast path writes them (`?` SQL,
values converted by storage.fast_path.Values, run on a plain sqlite3 connection) and as
SQLAlchemy Core (the same statements as cached Core constructs, executemany with
RETURNING through SQLAlchemy 2's insertmanyvalues, type-processed by SQLAlchemy, on the
same kind of connection), in one transaction each, on one SQLite file.

    python bench/fast_path.py [--groups N]

synchronous=OFF, so the fsync (the same for both) does not hide the CPU the statements
cost; the figure is µs of the writer's time per event. The physical reference is the
fast path itself: what SQLite and the sqlite3 module cost for these rows.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sqlalchemy as sa
from _common import busy_note, machine_line, table, tempdir
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import SQLModel

from storage.dialect import SQLITE
from storage.fast_path import Values, insert_returning, many, run_sync
from storage.sqlutil import EVENTS, USERS

BATCH, USERS_N = 100, 1000
NOW = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)


def group(g: int) -> list[tuple[str, datetime, str]]:
    return [(f"m-{g}-{i}", NOW + timedelta(milliseconds=g * BATCH + i), f"u{(g * 37 + i) % USERS_N}")
            for i in range(BATCH)]


def raw(conn: sqlite3.Connection, g: int) -> None:
    v = Values(SQLITE, NOW)

    def steps() -> Any:
        rows = [(mid, v.ts(NOW), "track", v.ts(at), "Clicked") for mid, at, _ in group(g)]
        yield from insert_returning("INSERT INTO events (message_id, received_at, type, "
                                    "timestamp, name) VALUES {} ON CONFLICT DO NOTHING",
                                    rows, "message_id")
        yield from many("UPDATE users SET last_seen = ?, event_count = ?, updated_at = ? "
                        "WHERE user_id = ?",
                        [(v.ts(at), g, v.ts(NOW), user) for _, at, user in group(g)])

    conn.execute("BEGIN IMMEDIATE")
    run_sync(steps(), conn)
    conn.execute("COMMIT")


_INSERT = sqlite_insert(EVENTS).on_conflict_do_nothing().returning(EVENTS.c.message_id)
_UPDATE = (sa.update(USERS).where(USERS.c.user_id == sa.bindparam("b_user"))
           .values(last_seen=sa.bindparam("b_seen", type_=USERS.c.last_seen.type),
                   event_count=sa.bindparam("b_count"),
                   updated_at=sa.bindparam("b_now", type_=USERS.c.updated_at.type)))


def core(conn: sa.Connection, g: int) -> None:
    with conn.begin():
        rows = [{"message_id": mid, "received_at": NOW, "type": "track", "timestamp": at,
                 "name": "Clicked"} for mid, at, _ in group(g)]
        conn.execute(_INSERT, rows).all()  # insertmanyvalues: a cached multi-row INSERT
        conn.execute(_UPDATE, [{"b_user": user, "b_seen": at, "b_count": g, "b_now": NOW}
                               for _, at, user in group(g)])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--groups", type=int, default=300)
    args = p.parse_args()
    print(machine_line())
    print(busy_note())
    work = tempdir("npsd-bench-fastpath-")
    path = work / "f.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    SQLModel.metadata.create_all(engine)
    with engine.begin() as c:
        c.execute(sa.insert(USERS), [{"user_id": f"u{i}", "updated_at": NOW}
                                      for i in range(USERS_N)])
    plain = sqlite3.connect(path, isolation_level=None)
    sa_conn = engine.connect()
    sa_conn.exec_driver_sql("PRAGMA synchronous=OFF")
    sa_conn.commit()
    plain.execute("PRAGMA journal_mode=WAL")
    plain.execute("PRAGMA synchronous=OFF")
    results: dict[str, list[float]] = {"fast path": [], "Core": []}
    for rnd in range(3):  # alternated, so a change in the machine's load hits both
        for name, run in (("fast path", lambda g: raw(plain, g)),
                          ("Core", lambda g: core(sa_conn, g))):
            base = (rnd * 2 + (name == "Core")) * args.groups
            started = time.perf_counter()
            for g in range(base, base + args.groups):
                run(g)
            results[name].append((time.perf_counter() - started) / (args.groups * BATCH) * 1e6)
    fast = sorted(results["fast path"])[1]
    rows = [[name, f"{sorted(t)[1]:.1f}", " / ".join(f"{x:.1f}" for x in t),
             f"{sorted(t)[1] / fast:.2f}x"] for name, t in results.items()]
    print(table(rows, ["path", "µs/event (median)", "runs", "vs fast path"]))
    print(f"{args.groups} groups of {BATCH} events per run; " + busy_note())


if __name__ == "__main__":
    main()
