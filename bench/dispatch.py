"""Survey dispatch: surveys/s through a local SMTP sink, and peak RSS with 1,000,000 pending.

    python bench/dispatch.py [--quick] [--due N] [--pending N] [--skip-rss] [--skip-throughput]

1. Throughput: N users (default 100,000) with one survey each, due in the past, seeded
   straight into the SQLite store; npsd (`npsd run`, email backend "smtp", security "none")
   sends them to a counting SMTP sink in its own process. Time from start (ready) until the
   store shows all of them sent. Target: >= 1,000 surveys/s. Printed as a ratio to its
   physical reference, measured in the same run right after: the same sink's rate with a
   bare SMTP client sending the same messages over as many connections (bench/_references.py);
   the raw SQLite commit rate in the same directory is printed too (each message's hand-off
   mark is one commit per connection at low load: the disk's fsync bounds a connection).
2. Memory: M users (default 1,000,000) with a pending survey due tomorrow; npsd runs ~20 s
   (dispatcher ticks, GET /metrics and GET /v1/status scrapes) while VmHWM is sampled.
   Target: peak RSS < 200 MB.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    ADMIN,
    PYTHON,
    Proc,
    busy_note,
    cpu_seconds,
    free_port,
    http_get,
    machine_line,
    rss_kb,
    start_npsd,
    table,
    tempdir,
    wait_port,
    write_config,
)
from _references import sink_rate, sqlite_commit_rate
from _seed import migrate, seed_sqlite

from settings import SmtpSettings

HERE = Path(__file__).resolve().parent


def read_counts(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def states(db: Path) -> dict[str, int]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return dict(con.execute("SELECT state, count(*) FROM surveys GROUP BY state").fetchall())
    finally:
        con.close()


def throughput(n: int, timeout: float, smtp_connections: int | None) -> dict[str, Any]:
    work = tempdir("dispatch")
    db = work / "npsd.db"
    url = f"sqlite+aiosqlite:///{db}"
    migrate(url)
    seed_s = seed_sqlite(db, n, "pending", datetime.now(UTC) - timedelta(hours=1))
    print(f"seeded {n:,} due surveys in {seed_s:.1f}s ({work})", flush=True)

    smtp_port = free_port()
    counts = work / "smtp-counts.json"
    sink = Proc([PYTHON, str(HERE / "_servers.py"), "smtp", str(smtp_port), str(counts)],
                work, "smtp-sink")
    npsd = None
    try:
        wait_port(smtp_port, 30, sink)
        port = free_port()
        smtp: dict[str, Any] = {"host": "127.0.0.1", "port": smtp_port, "security": "none"}
        if smtp_connections:
            smtp["max_connections"] = smtp_connections
        config = write_config(work / "config.toml", port, url, {
            "email": {"backend": "smtp", "from": "Acme <nps@acme.example>"},
            "email.smtp": smtp,
        })
        started = time.perf_counter()
        npsd = start_npsd(work, config)
        ready = time.perf_counter()
        cpu0 = cpu_seconds(npsd.pid)
        deadline = ready + timeout
        done_at = None
        last_print = ready
        s: dict[str, int] = {}
        while time.perf_counter() < deadline:
            if not npsd.alive():
                raise RuntimeError(f"npsd exited:\n{npsd.tail()}")
            s = states(db)
            finished = sum(s.get(k, 0) for k in ("sent", "failed", "skipped"))
            if finished >= n:
                done_at = time.perf_counter()
                break
            if time.perf_counter() - last_print > 10:
                last_print = time.perf_counter()
                print(f"  {last_print - ready:5.0f}s: {s}", flush=True)
            time.sleep(0.25)
        end = done_at or time.perf_counter()
        cpu = cpu_seconds(npsd.pid) - cpu0
        _, hwm = rss_kb(npsd.pid)
        npsd.stop()
        npsd = None
        time.sleep(0.5)  # the sink writes its counts every 0.2 s
        sink_counts = read_counts(counts)
        conns = smtp_connections or SmtpSettings().max_connections
        ref_n = min(n, 20_000)
        print(f"reference: a bare SMTP client sends {ref_n:,} of the same messages over "
              f"{conns} connections to the same sink", flush=True)
        ref = sink_rate(smtp_port, ref_n, conns)
        commits = sqlite_commit_rate(work)
    finally:
        if npsd is not None:
            npsd.stop()
        sink.stop()
    elapsed = end - ready
    sink_window = ((sink_counts.get("last") or 0) - (sink_counts.get("first") or 0)) or elapsed
    return {"n": n, "states": s, "complete": done_at is not None,
            "startup_s": ready - started, "elapsed_s": elapsed, "rate": s.get("sent", 0) / elapsed,
            "sink_messages": sink_counts.get("messages", 0),
            "sink_connections": sink_counts.get("connections", 0),
            "sink_rate": sink_counts.get("messages", 0) / sink_window,
            "server_cpu": cpu / elapsed, "hwm_mb": hwm / 1024, "connections": conns,
            "reference": ref, "ratio": (s.get("sent", 0) / elapsed) / ref if ref else 0.0,
            "commits_per_s": commits}


def memory(n: int, seconds: float) -> dict[str, Any]:
    work = tempdir("dispatch-rss")
    db = work / "npsd.db"
    url = f"sqlite+aiosqlite:///{db}"
    migrate(url)
    seed_s = seed_sqlite(db, n, "pending", datetime.now(UTC) + timedelta(days=1))
    size_mb = sum(p.stat().st_size for p in work.glob("npsd.db*")) / 2**20
    print(f"seeded {n:,} pending surveys (due +1 day) in {seed_s:.1f}s; db {size_mb:.0f} MB",
          flush=True)
    port = free_port()
    config = write_config(work / "config.toml", port, url)
    npsd = start_npsd(work, config)
    base = f"http://127.0.0.1:{port}"
    samples: list[int] = []
    scrape_ms: dict[str, list[float]] = {"/metrics": [], "/v1/status": []}
    try:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            for path in scrape_ms:
                t0 = time.perf_counter()
                code, _ = http_get(base + path, ADMIN if path.startswith("/v1") else None)
                scrape_ms[path].append((time.perf_counter() - t0) * 1000)
                if code != 200:
                    raise RuntimeError(f"GET {path} -> {code}")
            samples.append(rss_kb(npsd.pid)[0])
            time.sleep(1.0)
        rss, hwm = rss_kb(npsd.pid)
        code, body = http_get(base + "/v1/status", ADMIN)
        pending = json.loads(body)["surveys"]["pending"]
    finally:
        npsd.stop()
    return {"n": n, "pending": pending, "rss_mb": rss / 1024, "hwm_mb": hwm / 1024,
            "max_sampled_mb": max(samples) / 1024 if samples else 0,
            "metrics_ms": max(scrape_ms["/metrics"]), "status_ms": max(scrape_ms["/v1/status"]),
            "scrapes": len(samples)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--due", type=int, help="surveys due now (default 100,000; quick 10,000)")
    p.add_argument("--pending", type=int, help="pending surveys for RSS (default 1,000,000)")
    p.add_argument("--rss-seconds", type=float, help="how long npsd runs for RSS (default 20)")
    p.add_argument("--timeout", type=float, help="stop sending after S s (default 180; quick 30); "
                   "the rate is what was sent by then")
    p.add_argument("--smtp-connections", type=int, help="email.smtp.max_connections")
    p.add_argument("--skip-rss", action="store_true")
    p.add_argument("--skip-throughput", action="store_true")
    args = p.parse_args()
    due = args.due or (10_000 if args.quick else 100_000)
    pending = args.pending or (100_000 if args.quick else 1_000_000)
    rss_seconds = args.rss_seconds or (6.0 if args.quick else 20.0)
    timeout = args.timeout or (30.0 if args.quick else 180.0)
    print(machine_line(), flush=True)
    print(busy_note(), flush=True)
    rows = []
    verdicts = []
    if not args.skip_throughput:
        t = throughput(due, timeout, args.smtp_connections)
        rows.append(["dispatch to SMTP sink", f"{t['n']:,} due",
                     f"{t['rate']:,.0f} surveys/s = {t['ratio']:.2f}x the bare client's "
                     f"{t['reference']:,.0f}/s; peak RSS {t['hwm_mb']:.0f} MB",
                     f"{t['connections']} SMTP connections x SQLite commits "
                     f"{t['commits_per_s']:,.0f}/s here = "
                     f"{t['connections'] * t['commits_per_s']:,.0f}/s (one hand-off commit per "
                     f"message on each connection); {t['elapsed_s']:.1f}s after ready "
                     f"({t['startup_s']:.1f}s start); "
                     f"sink got {t['sink_messages']:,} on {t['sink_connections']} conns "
                     f"({t['sink_rate']:,.0f}/s while receiving); npsd CPU "
                     f"{t['server_cpu']:.0%}; states {t['states']}"])
        verdicts.append(f"target >= 1,000 surveys/s: {t['rate']:,.0f} -> "
                        f"{'PASS' if t['rate'] >= 1000 and t['complete'] else 'FAIL'}"
                        + ("" if t["complete"] else " (did not finish before the timeout)"))
    if not args.skip_rss:
        m = memory(pending, rss_seconds)
        rows.append(["peak RSS, idle with pending", f"{m['n']:,} pending",
                     f"{m['hwm_mb']:.0f} MB VmHWM",
                     f"VmRSS at end {m['rss_mb']:.0f} MB; {m['scrapes']} scrapes; slowest "
                     f"/metrics {m['metrics_ms']:.0f} ms, /v1/status {m['status_ms']:.0f} ms; "
                     f"status says pending {m['pending']:,}"])
        target = 200 if m["n"] >= 1_000_000 else None
        verdicts.append(f"target RSS < 200 MB at 1,000,000 pending: {m['hwm_mb']:.0f} MB"
                        + (f" -> {'PASS' if m['hwm_mb'] < 200 else 'FAIL'}" if target
                           else f" (only {m['n']:,} pending: not the target size)"))
    print()
    print(table(rows, ["figure", "load", "result", "detail"]))
    print()
    print("\n".join(verdicts))
    print("at end: " + busy_note())
    return 0


if __name__ == "__main__":
    sys.exit(main())
