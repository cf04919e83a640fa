"""What SQLite itself can insert into npsd's `events` table: the physical reference for
batched intake, by key shape and table size.

    python bench/events_table.py [--rows 700000] [--seconds 6] [--repeat 2]

Plain sqlite3, no npsd: a table shaped like `events` (messageId primary key, the
received_at index), WAL with synchronous=FULL, filled with `--rows` rows first; then for
`--seconds`, transactions of 2,000 rows (npsd's largest intake group) written as 100-row
`INSERT … ON CONFLICT DO NOTHING RETURNING` statements, as npsd writes them. Two key shapes:
"clustered" ids like bench/intake.py's load (a nonce, a thread, a counter: each new id lands
next to the previous ones) and "random" ids like the uuid4 messageIds Segment's libraries
send (each new id lands on its own b-tree page). Each configuration runs `--repeat` times,
alternated; every figure is rows/s. bench/intake.py's "raw SQLite commits" reference writes
clustered ids into an empty table, so it is this script's first line.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from _common import busy_note, machine_line, remove_sqlite_files, table, tempdir

GROUP = 2_000
STATEMENT = 100
_COLUMNS = "(message_id, received_at, type, timestamp, name)"
_INSERT = (f"INSERT INTO events {_COLUMNS} VALUES " + ",".join(["(?,?,?,?,?)"] * STATEMENT)
           + " ON CONFLICT DO NOTHING RETURNING message_id")


def clustered_ids() -> Iterator[str]:
    nonce = uuid.uuid4().hex[:8]
    n = 0
    while True:
        n += 1
        yield f"{nonce}-0-{n}"


def random_ids() -> Iterator[str]:
    while True:
        yield str(uuid.uuid4())


def _open(path: Path) -> sqlite3.Connection:
    remove_sqlite_files(path)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE events (message_id VARCHAR NOT NULL PRIMARY KEY, "
                 "received_at DATETIME NOT NULL, type VARCHAR NOT NULL, timestamp DATETIME, "
                 "name VARCHAR)")
    conn.execute("CREATE INDEX ix_events_received_at ON events (received_at)")
    return conn


def _rows(ids: Iterator[str], n: int, at: str) -> list[tuple[str, str, str, str, str]]:
    return [(next(ids), at, "track", "2026-05-01 10:00:00.000000", "Bench Event")
            for _ in range(n)]


def rate(path: Path, prefill: int, ids: Callable[[], Iterator[str]], seconds: float) -> float:
    conn = _open(path)
    try:
        keys = ids()
        conn.execute("BEGIN")
        for start in range(0, prefill, 50_000):
            conn.executemany(f"INSERT INTO events {_COLUMNS} VALUES (?,?,?,?,?)",
                             _rows(keys, min(50_000, prefill - start), "2026-12-01 00:00:00"))
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        written, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            at = f"2026-12-02 00:00:{written / 1e6:09.6f}"
            group = _rows(keys, GROUP, at)
            conn.execute("BEGIN IMMEDIATE")
            for i in range(0, GROUP, STATEMENT):
                conn.execute(_INSERT, [v for row in group[i:i + STATEMENT] for v in row]
                             ).fetchall()
            conn.execute("COMMIT")
            written += GROUP
        return written / (time.perf_counter() - started)
    finally:
        conn.close()
        remove_sqlite_files(path)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=700_000,
                   help="rows in the table before the timed inserts (default 700,000, "
                        "about what bench/intake.py leaves)")
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--repeat", type=int, default=2)
    args = p.parse_args()
    print(machine_line())
    print(busy_note(), flush=True)
    work = tempdir("events")
    configs = [("clustered", clustered_ids, 0), ("clustered", clustered_ids, args.rows),
               ("random", random_ids, 0), ("random", random_ids, args.rows)]
    results: dict[tuple[str, int], list[float]] = {(k, n): [] for k, _, n in configs}
    for _ in range(args.repeat):
        for keys, ids, prefill in configs:
            results[(keys, prefill)].append(rate(work / "events.db", prefill, ids,
                                                 args.seconds))
    rows = [[keys, f"{prefill:,}", " / ".join(f"{r:,.0f}" for r in results[(keys, prefill)])]
            for keys, _, prefill in configs]
    print(table(rows, ["message ids", "rows before", "rows/s (each run)"]))
    print("at end: " + busy_note())
    return 0


if __name__ == "__main__":
    sys.exit(main())
