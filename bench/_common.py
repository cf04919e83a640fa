"""Shared helpers for the benchmarks: the machine line, configs, starting and stopping npsd
and helper processes, seeding the store directly, and a tiny counting SMTP sink.

Everything listens on 127.0.0.1 only. Every wait here is bounded in time."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python")
if not Path(PYTHON).exists():
    PYTHON = sys.executable
API_KEY = "bench-key"
ADMIN = "bench-admin"
PG_ADMIN_URL = os.environ.get("NPSD_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")

sys.path.insert(0, str(ROOT))


# --- the machine -----------------------------------------------------------------------

def machine() -> dict[str, Any]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_mb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_mb = int(line.split()[1]) // 1024
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 0
    import aiohttp
    import sqlalchemy
    return {"cores": cores, "ram_mb": ram_mb, "cpu": model,
            "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
            "aiohttp": aiohttp.__version__, "sqlalchemy": sqlalchemy.__version__,
            "kernel": platform.release()}


def machine_line(extra: dict[str, Any] | None = None) -> str:
    m = {**machine(), **(extra or {})}
    return ("machine: {cores} cores, {ram_gb:.1f} GB RAM, CPU {cpu}, Python {python}, "
            "SQLite {sqlite}, aiohttp {aiohttp}, SQLAlchemy {sqlalchemy}, Linux {kernel}"
            .format(ram_gb=m["ram_mb"] / 1024, **m)
            + "".join(f", {k} {v}" for k, v in (extra or {}).items()))


def busy_note() -> str:
    """Load average and the busiest other processes: figures taken on a busy box are low."""
    one, five, _ = os.getloadavg()
    note = f"load average {one:.2f} (1 min), {five:.2f} (5 min)"
    if one > 0.5:
        try:
            out = subprocess.run(["ps", "-eo", "pcpu,args", "--sort=-pcpu"], capture_output=True,
                                 text=True, timeout=5, check=False).stdout.splitlines()[1:4]
            busy = "; ".join(" ".join(ln.split()[:4])[:70] for ln in out)
        except (OSError, subprocess.SubprocessError):
            busy = "?"
        note += f" -- WARNING: the machine is busy, figures will be low (top: {busy})"
    return note


def table(rows: list[list[Any]], header: list[str]) -> str:
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    out = []
    for n, r in enumerate(cells):
        out.append("  ".join(c.rjust(w) if n and i else c.ljust(w)
                             for i, (c, w) in enumerate(zip(r, widths, strict=True))))
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


# --- ports, configs, processes ---------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return str(value)


def write_config(path: Path, port: int, storage_url: str,
                 extra: dict[str, dict[str, Any]] | None = None) -> Path:
    sections: dict[str, dict[str, Any]] = {
        "server": {"host": "127.0.0.1", "port": port, "public_url": f"http://127.0.0.1:{port}",
                   "shutdown_timeout": "10s"},
        "storage": {"url": storage_url},
        "intake": {"api_keys": [API_KEY]},
        "admin": {"token": ADMIN},
        "email": {"backend": "file", "file_dir": str(path.parent / "outbox")},
        "log": {"format": "json", "level": "warning"},
    }
    for name, values in (extra or {}).items():
        sections.setdefault(name, {}).update(values)
    lines: list[str] = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in values.items()]
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    return path


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


class Proc:
    """A child process with its stderr in a file; stopped by its own pid only."""

    def __init__(self, args: list[str], workdir: Path, name: str,
                 stdout: int | None = subprocess.DEVNULL) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.log_path = workdir / f"{name}.stderr"
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        self.popen = subprocess.Popen(args, cwd=str(workdir), env=env(), stdout=stdout,
                                      stderr=self._log)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self._log.close()
        return self.popen.returncode


def start_npsd(workdir: Path, config: Path, name: str = "npsd",
               ready_timeout: float = 120.0) -> Proc:
    proc = Proc([PYTHON, "-m", "daemon.cli", "--config", str(config), "run"], workdir, name)
    port = _port_of(config)
    wait_http(f"http://127.0.0.1:{port}/readyz", ready_timeout, proc)
    return proc


def _port_of(config: Path) -> int:
    import tomllib
    return int(tomllib.loads(config.read_text())["server"]["port"])


def wait_http(url: str, timeout: float, proc: Proc | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} not ready after {timeout}s"
                       + (f"\n{proc.tail()}" if proc else ""))


def wait_port(port: int, timeout: float, proc: Proc | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"port {port} not open after {timeout}s")


def http_get(url: str, token: str | None = None, timeout: float = 30.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def rss_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in kB."""
    rss = hwm = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm


def cpu_seconds(pid: int) -> float:
    """user+system CPU seconds of a process (its threads included)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def tempdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"npsd-bench-{prefix}-"))


# --- seeding the store -----------------------------------------------------------------

def migrate(storage_url: str) -> None:
    """Create the schema exactly as npsd does."""
    from storage.db import Database
    from storage.migrations import migrate as run_migrate

    async def go() -> None:
        db = Database(storage_url)
        try:
            await run_migrate(db, datetime.now(UTC))
        finally:
            await db.close()

    asyncio.run(go())


def sqlite_time(value: datetime) -> str:
    """How SQLAlchemy's SQLite DateTime stores a value (naive UTC, microseconds)."""
    return value.astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def chunked(it: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for x in it:
        batch.append(x)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


USER_COLS = ("user_id", "anonymous", "email", "first_name", "name", "traits", "trait_times",
             "event_count", "session_count", "unsubscribe_synced", "updated_at")
SURVEY_COLS = ("user_id", "token", "kind", "state", "due_at", "created_at", "attempts",
               "answer_revision", "synced_revision", "needs_sync", "score", "comment",
               "answered_at", "sent_at")


def user_row(i: int, now: Any) -> tuple[Any, ...]:
    uid = f"user-{i:07d}"
    traits = json.dumps({"email": f"{uid}@example.test", "firstName": f"F{i}"})
    return (uid, False, f"{uid}@example.test", f"F{i}", f"F{i} L{i}", traits, "{}", 0, 0, True, now)


def survey_row(i: int, state: str, due: Any, now: Any, answered: Any = None) -> tuple[Any, ...]:
    uid = f"user-{i:07d}"
    if state == "answered":
        return (uid, secrets.token_urlsafe(16), "survey", "answered", due, now, 0, 1, 0, True,
                i % 11, f"comment {i}" if i % 3 else None, answered, due)
    return (uid, secrets.token_urlsafe(16), "survey", state, due, now, 0, 0, 0, False,
            None, None, None, None)


def seed_sqlite(path: Path, users: int, state: str, due: datetime,
                accounts: int = 0) -> float:
    """users users, one survey each, in `state` (pending or answered); returns seconds."""
    started = time.perf_counter()
    now_s = sqlite_time(datetime.now(UTC))
    due_s = sqlite_time(due)
    answered_s = sqlite_time(due + timedelta(hours=1))
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")  # seeding only; npsd uses FULL
    con.execute("PRAGMA cache_size=-200000")
    u_sql = f"INSERT INTO users ({','.join(USER_COLS)}) VALUES ({','.join('?' * len(USER_COLS))})"
    s_sql = (f"INSERT INTO surveys ({','.join(SURVEY_COLS)}) "
             f"VALUES ({','.join('?' * len(SURVEY_COLS))})")
    # Bulk load without the secondary indexes, then rebuild them (several times faster).
    indexes = con.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND "
                          "tbl_name IN ('users', 'surveys') AND sql IS NOT NULL").fetchall()
    with con:
        for name, _ in indexes:
            con.execute(f'DROP INDEX "{name}"')
        for part in chunked(range(users), 50_000):
            con.executemany(u_sql, (user_row(i, now_s) for i in part))
            con.executemany(s_sql, (survey_row(i, state, due_s, now_s, answered_s) for i in part))
        if accounts:
            con.executemany(
                "INSERT INTO accounts (group_id, traits, trait_times, updated_at) "
                "VALUES (?, '{}', '{}', ?)", ((f"acct-{g:05d}", now_s) for g in range(accounts)))
            con.executemany(
                "INSERT INTO memberships (user_id, group_id, active, changed_at) "
                "VALUES (?, ?, 1, ?)",
                ((f"user-{i:07d}", f"acct-{i % accounts:05d}", now_s) for i in range(users)))
        for _, sql in indexes:
            con.execute(sql)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return time.perf_counter() - started


async def seed_postgres(raw_url: str, users: int, state: str, due: datetime,
                        offset: int = 0) -> float:
    import asyncpg
    started = time.perf_counter()
    now = datetime.now(UTC)
    answered = due + timedelta(hours=1)
    conn = await asyncpg.connect(raw_url)
    try:
        for part in chunked(range(offset, offset + users), 50_000):
            await conn.copy_records_to_table(
                "users", columns=list(USER_COLS), records=[user_row(i, now) for i in part])
            await conn.copy_records_to_table(
                "surveys", columns=list(SURVEY_COLS),
                records=[survey_row(i, state, due, now, answered) for i in part])
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return time.perf_counter() - started


async def create_pg_database() -> tuple[str, str]:
    """(name, raw asyncpg url) of a fresh database."""
    import asyncpg
    name = "npsd_bench_" + secrets.token_hex(5)
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return name, f"{base}/{name}"


async def drop_pg_database(name: str) -> None:
    import asyncpg
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def pg_version() -> str:
    import asyncpg

    async def go() -> str:
        conn = await asyncpg.connect(PG_ADMIN_URL)
        try:
            return str(await conn.fetchval("SHOW server_version"))
        finally:
            await conn.close()

    try:
        return asyncio.run(go())
    except Exception as exc:
        return f"unreachable ({exc.__class__.__name__})"
