"""Benchmark of `npsd import`: a generated export of ROWS rows (default 1,000,000: a third
of them by user id, the rest email-only, 5 % of the people answering twice) imported into a
fresh SQLite database (or --postgres URL) by the real CLI, as a process.

Prints rows/s and the process's peak RSS for the import and for a re-import of the same file
(every row already present), with the physical reference measured in the same run: the rate
at which Python's csv module alone parses the same file, and the machine and its load.

    python bench/import.py [--rows 1000000] [--postgres postgresql+asyncpg://…] [--keep]
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import busy_note, env, machine_line, tempdir, write_config

ROOT = Path(__file__).resolve().parent.parent


def generate(path: Path, rows: int) -> None:
    rnd = random.Random(16)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    comments = ["", "", "", "Great support", "Too slow, and the export is missing",
                "Works well for our team"]
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["email", "score", "comment", "answered_at", "user_id"])
        for n in range(rows):
            person = n if rnd.random() > 0.05 else rnd.randrange(max(1, n))
            at = start + timedelta(minutes=n * 0.9)
            out.writerow([f"person{person}@example.com", rnd.randint(0, 10),
                          rnd.choice(comments), at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                          f"user-{person}" if person % 3 == 0 else ""])


def csv_rate(path: Path) -> float:
    began = time.perf_counter()
    with path.open(newline="") as f:
        count = sum(1 for _ in csv.reader(f)) - 1
    return count / (time.perf_counter() - began)


def run_import(config: Path, path: Path, workdir: Path) -> tuple[float, str, int, float]:
    """(seconds, the summary line, peak RSS in KB of this import process alone, and the CPU
    seconds it used: on a shared machine its rows per CPU second vary less than per
    second)."""
    out_path, err_path = workdir / "import.out", workdir / "import.err"
    began = time.perf_counter()
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "daemon.cli", "--config", str(config),
                                 "import", str(path), "--format", "csv"], cwd=workdir,
                                env=env(), stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - began
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"npsd import failed ({proc.returncode}): {err_path.read_text()[-2000:]}")
    return (seconds, out_path.read_text().strip(), usage.ru_maxrss,
            usage.ru_utime + usage.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--postgres", default="", help="a PostgreSQL URL (an empty database)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    work = tempdir("import")
    try:
        export = work / "export.csv"
        began = time.perf_counter()
        generate(export, args.rows)
        print(f"generated {args.rows:,} rows ({export.stat().st_size / 1e6:.0f} MB) in "
              f"{time.perf_counter() - began:.1f} s")
        url = args.postgres or f"sqlite+aiosqlite:///{work / 'npsd.db'}"
        config = write_config(work / "config.toml", 0, url)
        subprocess.run([sys.executable, "-m", "daemon.cli", "--config", str(config), "migrate"],
                       cwd=work, env=env(), check=True, capture_output=True)
        print(machine_line({"backend": "postgresql" if args.postgres else "sqlite"}))
        print(busy_note())
        reference = csv_rate(export)
        print(f"reference: csv.reader alone parses the file at {reference:,.0f} rows/s")
        for label in ("import", "re-import (all present)"):
            seconds, summary, peak_kb, cpu = run_import(config, export, work)
            rate = args.rows / seconds
            print(f"{label}: {seconds:.1f} s, {rate:,.0f} rows/s "
                  f"({100 * rate / reference:.1f} % of csv parsing), peak RSS "
                  f"{peak_kb / 1024:.0f} MB; CPU {cpu:.1f} s, {args.rows / cpu:,.0f} rows "
                  "per CPU second")
            print(f"  {summary}")
        print(busy_note())
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
