"""sd_notify over a real unix datagram socket (daemon/systemd.py)."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.systemd import READY, notify, status, watchdog_period


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(5)
        yield sock, str(path)


def test_ready_reaches_the_socket(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    assert notify(READY, status("listening on 127.0.0.1:8787"), environ={"NOTIFY_SOCKET": path})
    assert sock.recv(4096) == b"READY=1\nSTATUS=listening on 127.0.0.1:8787"


def test_each_call_is_one_datagram(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    env = {"NOTIFY_SOCKET": path}
    assert notify("WATCHDOG=1", environ=env)
    assert notify("STOPPING=1", environ=env)
    assert sock.recv(4096) == b"WATCHDOG=1"
    assert sock.recv(4096) == b"STOPPING=1"


@pytest.mark.skipif(
    not hasattr(socket, "AF_UNIX") or os.uname().sysname != "Linux",
    reason="abstract sockets are Linux-only",
)
def test_abstract_namespace() -> None:
    name = f"npsd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert notify(READY, environ={"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(4096) == b"READY=1"


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"NOTIFY_SOCKET": ""},
        {"NOTIFY_SOCKET": "relative/path"},
        {"NOTIFY_SOCKET": "vsock:2:1234"},
    ],
)
def test_unset_or_unsupported_returns_false(environ: dict[str, str]) -> None:
    assert notify(READY, environ=environ) is False


def test_missing_socket_returns_false(tmp_path: Path) -> None:
    assert notify(READY, environ={"NOTIFY_SOCKET": str(tmp_path / "gone.sock")}) is False


def test_no_messages_sends_nothing(listener: tuple[socket.socket, str]) -> None:
    _, path = listener
    assert notify(environ={"NOTIFY_SOCKET": path}) is False


def test_status_keeps_one_line() -> None:
    assert status("a\nb") == "STATUS=a b"


@pytest.mark.parametrize(
    ("environ", "pid", "expected"),
    [
        ({}, 42, None),
        ({"WATCHDOG_USEC": "30000000"}, 42, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, 42, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "41"}, 42, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": ""}, 42, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "x"}, 42, None),
        ({"WATCHDOG_USEC": "1000000"}, 42, 0.5),
        ({"WATCHDOG_USEC": "0"}, 42, None),
        ({"WATCHDOG_USEC": "-5"}, 42, None),
        ({"WATCHDOG_USEC": "soon"}, 42, None),
        ({"WATCHDOG_PID": "42"}, 42, None),
    ],
)
def test_watchdog_period(environ: dict[str, str], pid: int, expected: float | None) -> None:
    assert watchdog_period(environ, pid) == expected


def test_watchdog_period_defaults_to_own_pid() -> None:
    env = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert watchdog_period(env) == 1.0
