"""Periodic tidying: expire unanswered surveys, forget messageIds past the dedup window, and
remove outbox files of erased surveys that an interrupted erasure left behind."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import structlog

from jobs import outbox
from storage.store import Store

log = structlog.get_logger("npsd.housekeeping")

PRUNE_SLICE = 5000


async def housekeeping(store: Store, now: datetime, dedup_window: timedelta,
                       outbox_dir: Path | None = None) -> dict[str, int]:
    """`outbox_dir`: email.file_dir when the file backend is on."""
    expired = await store.expire(now)
    files = await outbox.prune(store, outbox_dir) if outbox_dir is not None else 0
    pruned = await store.prune(now - dedup_window, PRUNE_SLICE)
    if expired or pruned or files:
        log.info("housekeeping.done", surveys_expired=expired, events_pruned=pruned,
                 outbox_files_removed=files)
    return {"expired": expired, "pruned": pruned, "files": files}
