"""Sync-back: N answered surveys (default 100,000) sent to a local counting stand-in for
Segment's Tracking API by `npsd sync-now`; messages/s and batches.

    python bench/sync.py [--quick] [--answers N] [--accounts K] [--no-track] [--no-group]

The answers are seeded straight into the SQLite store (needs_sync=1, score, comment,
answered_at). With the defaults (track_answers and group_nps on) each answer yields an
identify and a track; with --accounts K every user is also in one of K accounts, which adds
a group call per answer. The counting server (bench/_servers.py segment) checks the write
key and Segment's limits (500 KB, 2,500 messages) and counts batches, messages and unique
messageIds. Target: >= 20,000 messages/s.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    PYTHON,
    Proc,
    busy_note,
    env,
    free_port,
    machine_line,
    table,
    tempdir,
    wait_port,
    write_config,
)
from _seed import migrate, seed_sqlite

HERE = Path(__file__).resolve().parent
WRITE_KEY = "bench-write-key"


def run(answers: int, accounts: int, track: bool, group: bool, timeout: float) -> dict[str, Any]:
    work = tempdir("sync")
    db = work / "npsd.db"
    url = f"sqlite+aiosqlite:///{db}"
    migrate(url)
    seed_s = seed_sqlite(db, answers, "answered", datetime.now(UTC) - timedelta(days=2),
                         accounts=accounts)
    print(f"seeded {answers:,} answers ({accounts} accounts) in {seed_s:.1f}s ({work})",
          flush=True)
    port = free_port()
    counts_path = work / "segment-counts.json"
    fake = Proc([PYTHON, str(HERE / "_servers.py"), "segment", str(port), str(counts_path),
                 WRITE_KEY], work, "fake-segment")
    try:
        wait_port(port, 30, fake)
        config = write_config(work / "config.toml", free_port(), url, {
            "segment": {"write_key": WRITE_KEY, "endpoint": f"http://127.0.0.1:{port}/v1",
                        "track_answers": track, "group_nps": group},
        })
        started = time.perf_counter()
        out = subprocess.run([PYTHON, "-m", "daemon.cli", "--config", str(config), "sync-now"],
                             cwd=str(work), env=env(), capture_output=True, text=True,
                             timeout=timeout, check=False)
        elapsed = time.perf_counter() - started
        time.sleep(0.5)  # let the counter file catch up
    finally:
        fake.stop()
    counts = json.loads(counts_path.read_text())
    if out.returncode != 0:
        raise RuntimeError(f"sync-now failed ({out.returncode}): {out.stdout}\n{out.stderr[-3000:]}")
    report = json.loads(out.stdout.strip().splitlines()[-1])
    window = (counts["last"] or 0) - (counts["first"] or 0)
    return {"answers": answers, "accounts": accounts, "report": report, "counts": counts,
            "elapsed_s": elapsed, "window_s": window,
            "rate_total": counts["messages"] / elapsed,
            "rate_window": counts["messages"] / window if window > 0 else 0.0}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--answers", type=int)
    p.add_argument("--accounts", type=int, default=0, help="put every user in one of K accounts")
    p.add_argument("--no-track", action="store_true", help="segment.track_answers = false")
    p.add_argument("--no-group", action="store_true", help="segment.group_nps = false")
    p.add_argument("--timeout", type=float, default=300.0)
    args = p.parse_args()
    answers = args.answers or (10_000 if args.quick else 100_000)
    print(machine_line(), flush=True)
    print(busy_note(), flush=True)
    r = run(answers, args.accounts, not args.no_track, not args.no_group, args.timeout)
    c = r["counts"]
    rows = [[f"{answers:,} answers", f"{c['messages']:,}", c["batches"],
             f"{c['messages'] / max(1, c['batches']):,.0f}", f"{c['max_body'] / 1024:.0f} KB",
             f"{r['elapsed_s']:.1f}s", f"{r['rate_total']:,.0f}", f"{r['rate_window']:,.0f}",
             json.dumps(c["by_type"]), f"{c['unique_ids']:,}", c["bad"]]]
    print()
    print(table(rows, ["seeded", "messages", "batches", "msgs/batch", "largest body",
                       "sync-now wall", "msgs/s (wall)", "msgs/s (first..last batch)",
                       "by type", "unique ids", "refused"]))
    print(f"\nnpsd sync-now report: {json.dumps(r['report'])}")
    rate = r["rate_total"]
    print(f"target >= 20,000 messages/s (whole sync-now, process start included): {rate:,.0f} -> "
          f"{'PASS' if rate >= 20_000 else 'FAIL'}; while sending: {r['rate_window']:,.0f}/s")
    print("at end: " + busy_note())
    return 0


if __name__ == "__main__":
    sys.exit(main())
