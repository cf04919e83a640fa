"""`npsd run` under a fake systemd: a real unix datagram socket as $NOTIFY_SOCKET.

READY=1 once the port accepts connections, WATCHDOG=1 at half of WATCHDOG_USEC while the
store answers (and not while it does not), RELOADING=1 then READY=1 on SIGHUP, STOPPING=1
on SIGTERM.

A stalled store is simulated on PostgreSQL (ALLOW_CONNECTIONS false and its backends
terminated): on SQLite the watchdog's `SELECT 1` touches no page, and in WAL mode neither
`BEGIN EXCLUSIVE` nor an exclusive locking mode taken by another connection can block it
(the daemon's own open connections keep the exclusive lock from being granted at all).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import socket
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from tests.conftest import PG_URL
from tests.harness import Daemon, free_port

WATCHDOG_USEC = 400_000  # npsd pings every half of it: 0.2 s
PERIOD_S = WATCHDOG_USEC / 2 / 1e6


@dataclass
class Notification:
    at: float
    fields: dict[str, str]
    port_open: bool | None = None  # for READY=1: could we connect at that moment?


@dataclass
class NotifySocket:
    """What systemd's end of $NOTIFY_SOCKET sees, with arrival times."""

    path: Path
    port: int
    received: list[Notification] = field(default_factory=list)

    def count(self, name: str) -> int:
        return len(self.with_field(name))

    def with_field(self, name: str, value: str = "1") -> list[Notification]:
        return [n for n in self.received if n.fields.get(name) == value]

    def sequence(self) -> list[str]:
        """Lifecycle notifications in order (WATCHDOG pings left out)."""
        names = ("READY", "RELOADING", "STOPPING")
        return [k for n in self.received for k in n.fields if k in names]

    async def wait_for(self, name: str, count: int = 1, timeout: float = 15.0) -> None:
        async with asyncio.timeout(timeout):
            while self.count(name) < count:
                await asyncio.sleep(0.01)


def _port_accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@contextlib.asynccontextmanager
async def notify_socket(tmp_path: Path, port: int) -> AsyncIterator[NotifySocket]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    listener = NotifySocket(path, port)
    loop = asyncio.get_running_loop()

    def on_readable() -> None:
        while True:
            try:
                data = sock.recv(4096)
            except BlockingIOError:
                return
            lines = data.decode().splitlines()
            fields = dict(line.split("=", 1) for line in lines if "=" in line)
            note = Notification(time.monotonic(), fields)
            if fields.get("READY") == "1":
                # Checked the moment READY=1 arrives, before npsd can do anything else.
                note.port_open = _port_accepts(port)
            listener.received.append(note)

    loop.add_reader(sock.fileno(), on_readable)
    try:
        yield listener
    finally:
        loop.remove_reader(sock.fileno())
        sock.close()


def _systemd_env(listener: NotifySocket) -> dict[str, str]:
    return {"NOTIFY_SOCKET": str(listener.path), "WATCHDOG_USEC": str(WATCHDOG_USEC)}


def _daemon(tmp_path: Path, url: str, port: int, listener: NotifySocket) -> Daemon:
    npsd = Daemon(tmp_path, url, port=port, env=_systemd_env(listener))
    npsd.env.pop("WATCHDOG_PID", None)  # unset: the watchdog is ours
    return npsd


async def test_ready_watchdog_reload_and_stop(tmp_path: Path) -> None:
    port = free_port()
    async with notify_socket(tmp_path, port) as sd:
        npsd = _daemon(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'npsd.db'}", port, sd)
        try:
            await npsd.start(wait=False)
            await sd.wait_for("READY")
            ready = sd.with_field("READY")[0]
            assert ready.port_open, "READY=1 was sent before the port accepted connections"
            # READY=1 means migrated too: /readyz answers 200 straight away.
            assert npsd.session is not None
            async with npsd.session.get(npsd.url + "/readyz") as r:
                assert r.status == 200

            # WATCHDOG=1 about every 0.2 s (half of WATCHDOG_USEC).
            first = sd.count("WATCHDOG")
            await sd.wait_for("WATCHDOG", first + 6, timeout=5)
            pings = [n.at for n in sd.with_field("WATCHDOG")][first:]
            gaps = [b - a for a, b in itertools.pairwise(pings)]
            assert 0.5 * PERIOD_S <= statistics.median(gaps) <= 1.75 * PERIOD_S, gaps
            assert max(gaps) < 2 * WATCHDOG_USEC / 1e6, gaps  # never late enough to be killed

            # SIGHUP: RELOADING=1, then READY=1 again.
            await npsd.send_signal(signal.SIGHUP)
            await sd.wait_for("READY", 2)
            await npsd.wait_for_event("config.reloaded", timeout=5)
            assert sd.sequence() == ["READY", "RELOADING", "READY"]
            assert all(n.port_open for n in sd.with_field("READY"))

            # SIGTERM: STOPPING=1 and exit 0.
            assert await npsd.stop(timeout=20) == 0
            assert sd.sequence() == ["READY", "RELOADING", "READY", "STOPPING"]
        finally:
            await npsd.close()


async def test_no_watchdog_pings_for_another_pid(tmp_path: Path) -> None:
    """WATCHDOG_PID naming another process: the watchdog is not npsd's to feed."""
    port = free_port()
    async with notify_socket(tmp_path, port) as sd:
        npsd = _daemon(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'npsd.db'}", port, sd)
        npsd.env["WATCHDOG_PID"] = "1"
        try:
            await npsd.start(wait=False)
            await sd.wait_for("READY")
            await asyncio.sleep(4 * PERIOD_S)
            assert sd.count("WATCHDOG") == 0
        finally:
            await npsd.close()


async def _set_connections(admin: asyncpg.Connection, name: str, allowed: bool) -> None:
    await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allowed).lower()}')
    if not allowed:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )


@pytest.mark.postgres
async def test_stalled_store_stops_watchdog_pings(tmp_path: Path, pg_url: str) -> None:
    name = pg_url.rpartition("/")[2]
    port = free_port()
    admin = await asyncpg.connect(PG_URL.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        async with notify_socket(tmp_path, port) as sd:
            npsd = _daemon(tmp_path, pg_url, port, sd)
            try:
                await npsd.start(wait=False)
                await sd.wait_for("READY")
                await sd.wait_for("WATCHDOG", 3, timeout=5)

                # The store becomes unreachable: the pings stop.
                await _set_connections(admin, name, allowed=False)
                await npsd.wait_for_event("watchdog.store_stalled", timeout=5)
                before = sd.count("WATCHDOG")
                # Three more checks of the store, each failing: no ping meanwhile.
                await npsd.wait_for_event("watchdog.store_stalled", count=4, timeout=10)
                assert sd.count("WATCHDOG") == before, "pinged while the store was unreachable"
                assert npsd.proc is not None and npsd.proc.returncode is None

                # Unblocked: the pings resume, and only now (none while it was blocked).
                unblocked_at = time.monotonic()
                await _set_connections(admin, name, allowed=True)
                await sd.wait_for("WATCHDOG", before + 3, timeout=10)
                assert all(n.at > unblocked_at for n in sd.with_field("WATCHDOG")[before:])
                assert npsd.session is not None
                async with npsd.session.get(
                    npsd.url + "/readyz", timeout=aiohttp.ClientTimeout(total=5)
                ) as r:
                    assert r.status == 200
                assert await npsd.stop(timeout=20) == 0
            finally:
                with contextlib.suppress(Exception):
                    await _set_connections(admin, name, allowed=True)
                await npsd.close()
    finally:
        await admin.close()
