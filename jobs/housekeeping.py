"""Periodic tidying: expire unanswered surveys, forget messageIds past the dedup window, and
remove outbox files of erased surveys that an interrupted erasure left behind."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
import structlog

from jobs import outbox
from storage import surveys
from storage.db import Database
from storage.sqlutil import EVENTS

log = structlog.get_logger("npsd.housekeeping")

PRUNE_SLICE = 5000


async def housekeeping(db: Database, now: datetime, dedup_window: timedelta,
                       outbox_dir: Path | None = None) -> dict[str, int]:
    """`outbox_dir`: email.file_dir when the file backend is on."""
    expired = await surveys.expire_unanswered(db, now)
    files = await outbox.prune(db, outbox_dir) if outbox_dir is not None else 0
    pruned = 0
    while True:
        # In slices, so the intake writer never waits long behind a big delete.
        async with db.write() as conn:
            old = (sa.select(EVENTS.c.message_id)
                   .where(EVENTS.c.received_at < now - dedup_window).limit(PRUNE_SLICE))
            done = (await conn.execute(
                sa.delete(EVENTS).where(EVENTS.c.message_id.in_(old.scalar_subquery())))).rowcount
        pruned += done
        if done < PRUNE_SLICE:
            break
    if expired or pruned or files:
        log.info("housekeeping.done", surveys_expired=expired, events_pruned=pruned,
                 outbox_files_removed=files)
    return {"expired": expired, "pruned": pruned, "files": files}
