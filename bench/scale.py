"""Scale-out on PostgreSQL (issue 6): intake events/s and surveys dispatched/s with one and
with two `npsd run` processes sharing one database, load spread across both ports.

    python bench/scale.py [--quick] [--seconds S] [--due N]

A fresh database is created on the local server ($NPSD_BENCH_POSTGRES, default
postgresql://postgres@127.0.0.1:5432/postgres) and dropped at the end.
Intake: wrk (or the Python load generator) with 100-message batches of track events and with
single messages; 32 connections in all, split evenly across the processes' ports.
Dispatch: N due surveys (default 40,000) seeded with COPY; the processes send them to one
counting SMTP sink; the rate counts from the moment the last process is ready until the
database shows all of them sent, with the CPU of each process, of PostgreSQL, of the sink and
how busy the whole machine was (two cores are shared by all of them).

References measured in the same run, so a reader sees what bound a figure: the bare aiohttp
endpoint (only parses the JSON) as one and as two processes under the same load, and raw
100-row INSERT+COMMIT transactions on the same PostgreSQL from one and from two
connections. Each figure is printed with its ratio to its reference, with the CPU share of
each npsd process and of the PostgreSQL server, and each npsd's peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    API_KEY,
    PYTHON,
    Proc,
    busy_note,
    cpu_seconds,
    free_port,
    machine_cpu_seconds,
    machine_line,
    peak_rss_mb,
    pg_server_cpu_seconds,
    start_npsd,
    table,
    tempdir,
    wait_port,
    write_config,
)
from _loadgen import have_wrk, python_run, wrk_run
from _seed import (
    create_pg_database,
    drop_pg_database,
    migrate,
    pg_commit_rate,
    pg_version,
    seed_postgres,
)

HERE = Path(__file__).resolve().parent


USERS = 10_000


def load(kind: str, urls: list[str], conns: int, seconds: float, batch: int,
         work: Path, disjoint: bool = False) -> dict[str, Any]:
    """Drive every url at once with conns/len(urls) connections each; sum the results.
    The load generators walk the same pool of users in the same order (each its own
    slice of it when `disjoint`, wrk only)."""
    results: list[dict[str, Any]] = [{} for _ in urls]

    def one(i: int, url: str) -> None:
        users = USERS // len(urls) if disjoint else USERS
        kw = {"conns": conns // len(urls), "seconds": seconds, "batch": batch,
              "nonce": secrets.token_hex(4), "users": users}
        if kind == "wrk":
            results[i] = wrk_run(url, API_KEY, threads=1, workdir=work,
                                 first_user=i * users if disjoint else 0, **kw)
        else:
            results[i] = python_run(url, API_KEY, **kw)

    threads = [threading.Thread(target=one, args=(i, u)) for i, u in enumerate(urls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 90)
    rps = sum(r["rps"] for r in results)
    return {"rps": rps, "eps": rps * batch, "p50_ms": max(r["p50_ms"] for r in results),
            "p99_ms": max(r["p99_ms"] for r in results),
            "errors": sum(r["errors"] for r in results)}


async def _count_sent(raw_url: str) -> dict[str, int]:
    import asyncpg
    conn = await asyncpg.connect(raw_url)
    try:
        rows = await conn.fetch("SELECT state, count(*) FROM surveys GROUP BY state")
        return {r[0]: int(r[1]) for r in rows}
    finally:
        await conn.close()


def start_many(work: Path, n: int, url: str, extra: dict[str, dict[str, Any]]
               ) -> tuple[list[Proc], list[str]]:
    procs, urls = [], []
    for i in range(n):
        port = free_port()
        config = write_config(work / f"config-{i}.toml", port, url, extra)
        procs.append(start_npsd(work, config, name=f"npsd-{i}"))
        urls.append(f"http://127.0.0.1:{port}")
    return procs, urls


def dispatch(work: Path, n_procs: int, url: str, raw: str, due: int, offset: int,
             smtp_port: int, sink_pid: int, timeout: float) -> dict[str, Any]:
    before = asyncio.run(_count_sent(raw)).get("sent", 0)
    seed_s = asyncio.run(seed_postgres(raw, due, "pending",
                                       datetime.now(UTC) - timedelta(hours=1), offset=offset))
    print(f"  seeded {due:,} due surveys in {seed_s:.1f}s", flush=True)
    extra = {"email": {"backend": "smtp"},
             "email.smtp": {"host": "127.0.0.1", "port": smtp_port, "security": "none"}}
    t0 = time.perf_counter()
    procs, _ = start_many(work / f"d{n_procs}", n_procs, url, extra)
    # The rate counts from the moment the last process is ready (the first may have begun):
    # what n processes send together, not the first one's head start.
    ready = time.perf_counter()
    at_ready = asyncio.run(_count_sent(raw)).get("sent", 0)
    cpu0 = [cpu_seconds(p.pid) for p in procs]
    pg0 = pg_server_cpu_seconds()
    sink0 = cpu_seconds(sink_pid)
    machine0 = machine_cpu_seconds()
    done = None
    states: dict[str, int] = {}
    try:
        while time.perf_counter() < ready + timeout:
            states = asyncio.run(_count_sent(raw))
            if states.get("sent", 0) - before + states.get("failed", 0) >= due:
                done = time.perf_counter()
                break
            for p in procs:
                if not p.alive():
                    raise RuntimeError(f"{p.name} exited:\n{p.tail()}")
            time.sleep(0.25)
        end = done or time.perf_counter()
        cpu = [cpu_seconds(p.pid) - c for p, c in zip(procs, cpu0, strict=True)]
        pg_cpu = (pg_server_cpu_seconds() - pg0) / (end - ready)
        sink_cpu = (cpu_seconds(sink_pid) - sink0) / (end - ready)
        machine1 = machine_cpu_seconds()
        busy = (machine1[0] - machine0[0]) / max(1e-9, machine1[1] - machine0[1])
        rss = [peak_rss_mb(p.pid) for p in procs]
    finally:
        for p in procs:
            p.stop()
    sent = states.get("sent", 0) - before
    elapsed = end - t0
    rate = (states.get("sent", 0) - at_ready) / (end - ready)
    return {"rate": rate, "elapsed": elapsed, "sent": sent, "complete": bool(done),
            "cpu": [c / (end - ready) for c in cpu], "start_s": ready - t0, "pg_cpu": pg_cpu,
            "rss": rss, "sink_cpu": sink_cpu, "machine_busy": busy}


def bare_many(work: Path, n: int) -> tuple[list[Proc], list[str]]:
    procs, urls = [], []
    for i in range(n):
        port = free_port()
        procs.append(Proc([PYTHON, str(HERE / "_servers.py"), "bare", str(port)], work,
                          f"bare-{n}-{i}"))
        wait_port(port, 30, procs[-1])
        urls.append(f"http://127.0.0.1:{port}")
    return procs, urls


def measure(args: argparse.Namespace, procs: list[Proc], urls: list[str], batch: int,
            seconds: float, work: Path, disjoint: bool = False) -> dict[str, Any]:
    """One warmed-up load phase; adds each process's and the PostgreSQL server's CPU."""
    load(args.loadgen, urls, args.conns, min(2.0, seconds), batch, work, disjoint)  # warm
    cpu0 = [cpu_seconds(p.pid) for p in procs]
    pg0 = pg_server_cpu_seconds()
    machine0 = machine_cpu_seconds()
    t0 = time.perf_counter()
    r = load(args.loadgen, urls, args.conns, seconds, batch, work, disjoint)
    wall = time.perf_counter() - t0
    machine1 = machine_cpu_seconds()
    r["cpu"] = [(cpu_seconds(p.pid) - c) / wall for p, c in zip(procs, cpu0, strict=True)]
    r["pg_cpu"] = (pg_server_cpu_seconds() - pg0) / wall
    r["machine_busy"] = (machine1[0] - machine0[0]) / max(1e-9, machine1[1] - machine0[1])
    return r


def _cpu(r: dict[str, Any]) -> str:
    return ("CPU " + ", ".join(f"{c:.0%}" for c in r["cpu"]) + f"; postgres {r['pg_cpu']:.0%}"
            + (f"; machine {r['machine_busy']:.0%} busy" if "machine_busy" in r else ""))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--seconds", type=float, help="measured seconds per intake phase (default 10)")
    p.add_argument("--due", type=int, help="surveys to dispatch per run (default 40,000)")
    p.add_argument("--conns", type=int, default=32)
    p.add_argument("--timeout", type=float, default=45.0,
                   help="stop a dispatch run after S s; the rate is what was sent by then")
    p.add_argument("--loadgen", choices=("wrk", "python"), default="wrk" if have_wrk() else "python")
    p.add_argument("--only", choices=("intake", "dispatch"),
                   help="measure only this part (with its references)")
    args = p.parse_args()
    seconds = args.seconds or (3.0 if args.quick else 8.0)
    due = args.due or (3_000 if args.quick else 40_000)
    print(machine_line({"PostgreSQL": pg_version(), "loadgen": args.loadgen}), flush=True)
    print(busy_note(), flush=True)

    name, raw = asyncio.run(create_pg_database())
    url = raw.replace("postgresql://", "postgresql+asyncpg://", 1)
    migrate(url)  # the schema, whichever part runs first
    work = tempdir("scale")
    print(f"database {name}; workdir {work}", flush=True)
    rows: list[list[Any]] = []
    figures: dict[tuple[str, int], float] = {}
    smtp_port = free_port()
    sink = Proc([PYTHON, str(HERE / "_servers.py"), "smtp", str(smtp_port),
                 str(work / "smtp-counts.json")], work, "smtp-sink")
    try:
        wait_port(smtp_port, 30, sink)
        # --- references: the bare endpoint, raw PostgreSQL commits
        bare: dict[tuple[int, int], dict[str, Any]] = {}
        for n in (1, 2) if args.only != "dispatch" else ():
            procs, urls = bare_many(work / f"bare{n}", n)
            try:
                for batch in (1, 100):
                    bare[(n, batch)] = measure(args, procs, urls, batch, seconds, work)
                    print(f"  bare x{n} batch {batch}: {bare[(n, batch)]['eps']:,.0f} events/s, "
                          f"{_cpu(bare[(n, batch)])}", flush=True)
            finally:
                for proc in procs:
                    proc.stop()
        pg_rows = {n: asyncio.run(pg_commit_rate(raw, min(3.0, seconds), conns=n))
                   for n in (1, 2)}
        print(f"  raw PostgreSQL 100-row commits: {pg_rows[1]:,.0f} rows/s (1 connection), "
              f"{pg_rows[2]:,.0f} rows/s (2)", flush=True)
        # --- intake
        for n in (1, 2) if args.only != "dispatch" else ():
            procs, urls = start_many(work / f"i{n}", n, url, {})
            try:
                for batch in (1, 100):
                    r = measure(args, procs, urls, batch, seconds, work)
                    what = "single" if batch == 1 else f"batch {batch}"
                    figures[(what, n)] = r["eps"]
                    ref = bare[(n, batch)]["eps"]
                    ratio = f"{r['eps'] / ref:.0%} of bare x{n}"
                    if batch > 1:
                        ratio += f", {r['eps'] / pg_rows[n]:.0%} of raw PG x{n}"
                    rows.append([f"intake {what}", n, f"{r['rps']:,.0f} req/s",
                                 f"{r['eps']:,.0f} events/s", ratio,
                                 f"p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms, "
                                 f"errors {r['errors']}, npsd {_cpu(r)}"])
                    print(f"  {rows[-1]}", flush=True)
                if n == 2 and args.loadgen == "wrk":
                    # The same load, each process's traffic about its own half of the users:
                    # what the per-key locks allow when batches do not meet.
                    r = measure(args, procs, urls, 100, seconds, work, disjoint=True)
                    figures[("batch 100, disjoint users", n)] = r["eps"]
                    figures[("batch 100, disjoint users", 1)] = figures[("batch 100", 1)]
                    rows.append(["intake batch 100, disjoint users", n,
                                 f"{r['rps']:,.0f} req/s", f"{r['eps']:,.0f} events/s",
                                 f"{r['eps'] / bare[(n, 100)]['eps']:.0%} of bare x{n}, "
                                 f"{r['eps'] / pg_rows[n]:.0%} of raw PG x{n}",
                                 f"p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms, "
                                 f"errors {r['errors']}, npsd {_cpu(r)}"])
                    print(f"  {rows[-1]}", flush=True)
                rss = ", ".join(f"{peak_rss_mb(p.pid)} MB" for p in procs)
                rows[-1][-1] += f"; peak RSS {rss}"
            finally:
                for proc in procs:
                    proc.stop()
        # --- dispatch
        for n in (1, 2) if args.only != "intake" else ():
            d = dispatch(work, n, url, raw, due, offset=10_000_000 * n, smtp_port=smtp_port,
                         sink_pid=sink.pid, timeout=args.timeout)
            figures[("dispatch", n)] = d["rate"]
            rows.append(["dispatch", n, f"{d['rate']:,.0f} surveys/s",
                         f"{d['sent']:,} sent in {d['elapsed']:.1f}s",
                         f"{d['rate'] / figures[('dispatch', 1)]:.2f}x of one process",
                         f"{'complete' if d['complete'] else 'TIMED OUT'}; start "
                         f"{d['start_s']:.1f}s; npsd "
                         + _cpu(d) + f"; SMTP sink {d['sink_cpu']:.0%}; peak RSS "
                         + ", ".join(f"{m} MB" for m in d["rss"])])
            print(f"  {rows[-1]}", flush=True)
    finally:
        sink.stop()
        asyncio.run(drop_pg_database(name))
    print()
    print(table(rows, ["figure", "processes", "throughput", "volume", "vs reference",
                       "detail"]))
    print()
    for what in ("single", "batch 100", "batch 100, disjoint users", "dispatch"):
        one, two = figures.get((what, 1)), figures.get((what, 2))
        if one and two:
            print(f"{what}: two processes / one = {two / one:.2f}x")
    for batch in (1, 100):
        b1, b2 = bare.get((1, batch)), bare.get((2, batch))
        if b1 and b2:
            print(f"bare endpoint batch {batch}: two processes / one = "
                  f"{b2['eps'] / b1['eps']:.2f}x (the machine's own scaling of this load)")
    if pg_rows:
        print(f"raw PostgreSQL commits: two connections / one = {pg_rows[2] / pg_rows[1]:.2f}x")
    print("at end: " + busy_note())
    return 0


if __name__ == "__main__":
    sys.exit(main())
