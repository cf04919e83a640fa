"""Periodic tidying: expire unanswered surveys, forget messageIds past the dedup window,
remove outbox files of erased surveys that an interrupted erasure left behind, and forget
alerts and webhooks delivered (or dropped) more than DELIVERIES_KEPT ago: their bodies hold
comments and emails. Dead letters stay until replayed or erased."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import structlog

from jobs import outbox
from storage.store import Store

log = structlog.get_logger("npsd.housekeeping")

PRUNE_SLICE = 5000
DELIVERIES_KEPT = timedelta(days=7)


async def housekeeping(store: Store, now: datetime, dedup_window: timedelta,
                       outbox_dir: Path | None = None) -> dict[str, int]:
    """`outbox_dir`: email.file_dir when the file backend is on."""
    expired = await store.expire(now)
    files = await outbox.prune(store, outbox_dir) if outbox_dir is not None else 0
    pruned = await store.prune(now - dedup_window, PRUNE_SLICE)
    delivered = await store.prune_deliveries(now - DELIVERIES_KEPT)
    if expired or pruned or files or delivered:
        log.info("housekeeping.done", surveys_expired=expired, events_pruned=pruned,
                 outbox_files_removed=files, deliveries_pruned=delivered)
    return {"expired": expired, "pruned": pruned, "files": files, "deliveries": delivered}
