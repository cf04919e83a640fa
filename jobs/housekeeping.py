"""Periodic tidying: expire unanswered surveys, forget messageIds past the dedup window."""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
import structlog

from storage import surveys
from storage.db import Database
from storage.sqlutil import EVENTS

log = structlog.get_logger("npsd.housekeeping")


async def housekeeping(db: Database, now: datetime, dedup_window: timedelta) -> dict[str, int]:
    expired = await surveys.expire_unanswered(db, now)
    async with db.write() as conn:
        pruned = (await conn.execute(
            sa.delete(EVENTS).where(EVENTS.c.received_at < now - dedup_window))).rowcount
    if expired or pruned:
        log.info("housekeeping.done", surveys_expired=expired, events_pruned=pruned)
    return {"expired": expired, "pruned": pruned}
