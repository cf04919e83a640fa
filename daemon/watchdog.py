"""systemd watchdog: WATCHDOG=1 only while the event loop turns AND the store answers AND the
intake writer is alive. A stalled store stops the pings, and systemd restarts npsd."""

from __future__ import annotations

import asyncio
import os

import sqlalchemy as sa
import structlog

from daemon import systemd
from daemon.runtime import Runtime
from storage.db import StoreUnavailable

log = structlog.get_logger("npsd.watchdog")


async def store_alive(runtime: Runtime, timeout_s: float) -> bool:
    writer = runtime.committer.task
    if writer is None or writer.done():
        return False
    try:
        async with asyncio.timeout(timeout_s), runtime.db.read() as conn:
            await conn.execute(sa.text("SELECT 1"))
    except (TimeoutError, StoreUnavailable, OSError):
        return False
    return True


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
