"""systemd watchdog: WATCHDOG=1 only while the event loop turns AND the store answers AND the
intake writer is alive. A stalled store stops the pings, and systemd restarts npsd."""

from __future__ import annotations

import asyncio
import os

import structlog

from daemon import systemd
from daemon.runtime import Runtime

log = structlog.get_logger("npsd.watchdog")


async def store_alive(runtime: Runtime, timeout_s: float) -> bool:
    store = runtime.store
    return store.writer_alive() and await store.ping(timeout_s)


async def watchdog_loop(runtime: Runtime) -> None:
    period = systemd.watchdog_period(os.environ, os.getpid())
    if period is None:
        return
    while True:
        if await store_alive(runtime, timeout_s=period):
            systemd.notify(systemd.WATCHDOG)
        else:
            log.warning("watchdog.store_stalled")
        await asyncio.sleep(period)
