"""sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET.

Notification is best effort, as in libsystemd: outside systemd (tests, a terminal) or when
the socket is gone, nothing is sent and nothing is raised, so callers never guard it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

__all__ = [
    "READY",
    "RELOADING",
    "STOPPING",
    "WATCHDOG",
    "notify",
    "status",
    "watchdog_period",
]

READY = "READY=1"
RELOADING = "RELOADING=1"
STOPPING = "STOPPING=1"
WATCHDOG = "WATCHDOG=1"


def status(text: str) -> str:
    """A STATUS= line; newlines would start a new assignment, so they become spaces."""
    return "STATUS=" + " ".join(text.splitlines())


def _address(value: str) -> str | None:
    if value.startswith("@"):
        # Abstract namespace: the leading "@" stands for a NUL byte.
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None  # vsock: and other transports are not used by our units


def notify(*messages: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send `messages` ("READY=1", "STATUS=…") as one datagram; True if it was sent."""
    env = os.environ if environ is None else environ
    address = _address(env.get("NOTIFY_SOCKET", ""))
    if address is None or not messages:
        return False
    payload = "\n".join(messages).encode("utf-8")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            # Never block the event loop: a full socket buffer loses a ping, not the loop.
            sock.setblocking(False)
            sock.sendto(payload, address)
    except OSError:
        return False
    return True


def watchdog_period(
    environ: Mapping[str, str] | None = None, pid: int | None = None
) -> float | None:
    """Seconds between WATCHDOG=1 pings, or None when the watchdog is not ours.

    Half of WATCHDOG_USEC, as sd_watchdog_enabled(3) recommends, when it is set and
    WATCHDOG_PID is unset or names this process (`pid`, default os.getpid()).
    """
    env = os.environ if environ is None else environ
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    watchdog_pid = env.get("WATCHDOG_PID")
    if watchdog_pid:
        try:
            if int(watchdog_pid) != (os.getpid() if pid is None else pid):
                return None
        except ValueError:
            return None
    return usec / 2 / 1e6
