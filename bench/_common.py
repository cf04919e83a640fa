"""Shared helpers for the benchmarks: the machine line, configs, starting and stopping npsd
and helper processes, seeding the store directly, and a tiny counting SMTP sink.

Everything listens on 127.0.0.1 only. Every wait here is bounded in time."""

from __future__ import annotations

import json
import os
import platform
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
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


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, all cores (/proc/stat): what
    is left of the machine while a figure is measured."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(fields) - idle) / tick, sum(fields) / tick


def tempdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"npsd-bench-{prefix}-"))


# --- physical references ---------------------------------------------------------------

def remove_sqlite_files(path: Path) -> None:
    """A reference database and its WAL and shared-memory files."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def sqlite_commit_rate(path: Path, seconds: float = 2.0, rows: int = 100) -> float:
    """Rows/s of raw `rows`-row transactions into a WAL database with synchronous=FULL (the
    ceiling of what npsd's SQLite intake could commit): small rows shaped like `events`."""
    con = sqlite3.connect(path, isolation_level=None)
    try:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")
        con.execute("CREATE TABLE IF NOT EXISTS ref (message_id TEXT PRIMARY KEY, "
                    "received_at TEXT, type TEXT, timestamp TEXT, name TEXT)")
        n = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            con.execute("BEGIN IMMEDIATE")
            con.executemany("INSERT INTO ref VALUES (?, ?, 'track', ?, 'Bench Event')",
                            [(f"m{n + i}", "2026-05-01 00:00:00.000000",
                              "2026-05-01 00:00:00.000000") for i in range(rows)])
            con.execute("COMMIT")
            n += rows
        return n / (time.perf_counter() - t0)
    finally:
        con.close()
        remove_sqlite_files(path)


def sqlite_group_commit_s(path: Path, group: int = 32, users: int = 10_000,
                          seconds: float = 2.0) -> float:
    """Seconds per commit of what one group of `group` single messages must write, in plain
    sqlite3 with npsd's WAL + synchronous=FULL: `group` events rows inserted and `group`
    rows of a users-shaped table (`users` rows of ~130 bytes, as the bench's users are)
    updated at random, each on its own page as the pool's users mostly are. Under a closed
    load of `group` connections every request waits for one such commit."""
    con = sqlite3.connect(path, isolation_level=None)
    try:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")
        con.execute("CREATE TABLE ev (message_id TEXT PRIMARY KEY, received_at TEXT, "
                    "type TEXT, timestamp TEXT, name TEXT)")
        con.execute("CREATE INDEX ev_received ON ev (received_at)")
        con.execute("CREATE TABLE us (user_id TEXT PRIMARY KEY, row TEXT, last_seen TEXT, "
                    "event_count INTEGER)")
        con.execute("BEGIN")
        con.executemany("INSERT INTO us VALUES (?, ?, ?, 0)",
                        [(f"u{i}", "x" * 80, "2026-05-01 00:00:00.000000")
                         for i in range(users)])
        con.execute("COMMIT")
        pick = random.Random(0)
        n = commits = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            at = f"2026-05-01 00:00:{commits % 60:02d}.000000"
            con.execute("BEGIN IMMEDIATE")
            con.executemany("INSERT INTO ev VALUES (?, ?, 'track', ?, 'Bench Event')",
                            [(f"m{n + i}", at, at) for i in range(group)])
            con.executemany("UPDATE us SET last_seen = ?, event_count = event_count + 1 "
                            "WHERE user_id = ?",
                            [(at, f"u{pick.randrange(users)}") for _ in range(group)])
            con.execute("COMMIT")
            n += group
            commits += 1
        return (time.perf_counter() - t0) / commits
    finally:
        con.close()
        remove_sqlite_files(path)


def peak_rss_mb(pid: int) -> int:
    return rss_kb(pid)[1] // 1024


def pg_server_cpu_seconds() -> float:
    """CPU seconds of every `postgres` process on the machine (the server's share)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name = text[text.find("(") + 1:text.rfind(")")]
        if name.startswith("postgres"):
            fields = text.rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total
