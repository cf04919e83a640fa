"""The daily sync-back: every answer recorded or revised since it was last synced goes to
Segment's Tracking API as an identify with the NPS traits (plus, optionally, a track event,
a group call per account, and the unsubscribed trait).

Progress is checkpointed per batch: an answer's revision is marked synced once every message
it produced has been delivered (or refused by Segment and recorded). A crash re-sends at most
the batch in flight, with the same messageIds, which Segment deduplicates."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from daemon.config import SegmentSettings
from jobs.clock import Clock
from jobs.owners import owner_is_dead
from jobs.segment_client import RetryPolicy, SegmentClient, SegmentSendAborted
from jobs.sync_batching import batches, fit_message, message_id
from storage import reads, sync_store
from storage.db import Database, StoreUnavailable
from storage.sync_store import PendingAnswer
from storage.timeparse import iso

log = structlog.get_logger("npsd.sync")

LEASE = timedelta(minutes=5)
CHUNK_ANSWERS = 1000
LIBRARY = {"name": "npsd", "version": "0.1.0"}


def answer_messages(
    a: PendingAnswer, s: SegmentSettings, newest: bool, accounts: list[str],
    figures: dict[str, dict[str, Any]],
) -> list[dict[str, Any]]:
    """The messages one answer revision produces; ids are deterministic per revision."""
    when = iso(a.answered_at)
    base = {"userId": a.user_id, "timestamp": when, "context": {"library": LIBRARY}}
    rev = (str(a.survey_id), str(a.revision))
    out: list[dict[str, Any]] = []
    if newest:
        out.append({**base, "type": "identify", "messageId": message_id("identify", *rev),
                    "traits": {s.rating_trait: a.score, s.comment_trait: a.comment,
                               s.date_trait: when}})
    if s.track_answers:
        out.append({**base, "type": "track", "event": "NPS Survey Answered",
                    "messageId": message_id("track", *rev),
                    "properties": {"rating": a.score, "comment": a.comment,
                                   "survey_id": a.survey_id, "revision": a.revision}})
    if s.group_nps:
        for group_id in accounts:
            f = figures.get(group_id, {})
            out.append({**base, "type": "group", "groupId": group_id,
                        "messageId": message_id("group", group_id, *rev),
                        "traits": {"NPS": f.get("nps"), "NPS_responses": f.get("responses")}})
    truncatable = (("traits", s.comment_trait), ("properties", "comment"))
    return [fit_message(m, truncatable=truncatable) for m in out]


class Syncer:
    def __init__(self, db: Database, clock: Clock, owner: str,
                 settings: Callable[[], SegmentSettings], session: aiohttp.ClientSession,
                 *, policy: RetryPolicy | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 on_batch: Callable[[str, int], None] | None = None) -> None:
        self._db, self._clock, self._owner = db, clock, owner
        self._settings, self._session = settings, session
        self._policy = policy or RetryPolicy()
        self._sleep = sleep
        self._lock = asyncio.Lock()
        self._on_batch = on_batch

    async def run(self, trigger: str) -> dict[str, Any]:
        s = self._settings()
        if not s.enabled:
            return {"result": "disabled"}
        if self._lock.locked():
            return {"result": "busy"}
        async with self._lock:
            now = self._clock.now()
            current = await sync_store.holder(self._db)
            if current is not None and current != self._owner and owner_is_dead(current):
                log.warning("sync.lease_broken", reason="the previous holder died")
                await sync_store.break_lease(self._db, current)
            if not await sync_store.acquire_lease(self._db, self._owner, now, LEASE):
                log.info("sync.busy", trigger=trigger)
                return {"result": "busy"}
            log.info("sync.started", trigger=trigger)
            client = SegmentClient(self._session, s.endpoint, s.write_key, self._policy,
                                   self._sleep, clock=self._clock)
            counts = {"sent": 0, "failed": 0, "batches": 0}
            result = "ok"
            try:
                await self._answers(client, s, counts)
                if s.sync_unsubscribes:
                    await self._unsubscribes(client, s, counts)
            except SegmentSendAborted as exc:
                result = exc.result.status
                log.warning("sync.failed", reason=str(exc), **counts)
            except StoreUnavailable as exc:
                result = "store_unavailable"
                log.warning("sync.failed", reason=str(exc), **counts)
            finally:
                await sync_store.release_lease(self._db, self._owner, self._clock.now(),
                                               result, counts["sent"], counts["failed"])
            if result == "ok":
                log.info("sync.finished", trigger=trigger, **counts)
            return {"result": result, **counts}

    async def _answers(self, client: SegmentClient, s: SegmentSettings,
                       counts: dict[str, int]) -> None:
        while True:
            answers = await sync_store.pending_answers(self._db, CHUNK_ANSWERS)
            if not answers:
                return
            users = sorted({a.user_id for a in answers})
            newest = await sync_store.newest_answer_ids(self._db, users)
            accounts = await sync_store.accounts_of(self._db, users) if s.group_nps else {}
            figures = await reads.account_figures(
                self._db, [g for gs in accounts.values() for g in gs]) if accounts else {}
            owner_of: dict[str, tuple[int, int]] = {}
            remaining: dict[tuple[int, int], int] = {}
            messages: list[dict[str, Any]] = []
            for a in answers:
                produced = answer_messages(a, s, newest.get(a.user_id) == a.survey_id,
                                           accounts.get(a.user_id, []), figures)
                key = (a.survey_id, a.revision)
                remaining[key] = len(produced)
                for m in produced:
                    owner_of[m["messageId"]] = key
                messages.extend(produced)
            done = [k for k, n in remaining.items() if n == 0]
            for batch in batches(messages):
                delivered, rejected = await self._send(client, batch)
                failures = [{"survey_id": owner_of[m["messageId"]][0], "user_id": m.get("userId"),
                             "message_id": m["messageId"], "reason": reason[:500]}
                            for m, reason in rejected]
                await sync_store.record_failures(self._db, self._clock.now(), failures)
                for m in delivered + [m for m, _ in rejected]:
                    key = owner_of[m["messageId"]]
                    remaining[key] -= 1
                    if remaining[key] == 0:
                        done.append(key)
                await sync_store.mark_synced(self._db, done)
                done = []
                counts["sent"] += len(delivered)
                counts["failed"] += len(rejected)
                counts["batches"] += 1
                await sync_store.renew_lease(self._db, self._owner, self._clock.now(), LEASE)

    async def _unsubscribes(self, client: SegmentClient, s: SegmentSettings,
                            counts: dict[str, int]) -> None:
        while True:
            pending = await sync_store.pending_unsubscribes(self._db, 2000)
            if not pending:
                return
            messages = [{"type": "identify", "userId": user_id, "timestamp": iso(at),
                         "context": {"library": LIBRARY},
                         "messageId": message_id("unsubscribed", user_id, iso(at) or ""),
                         "traits": {s.unsubscribed_trait: True}} for user_id, at in pending]
            for batch in batches(messages):
                delivered, rejected = await self._send(client, batch)
                counts["sent"] += len(delivered)
                counts["failed"] += len(rejected)
                counts["batches"] += 1
                await sync_store.mark_unsubscribes_synced(
                    self._db, [m["userId"] for m in delivered] + [m["userId"] for m, _ in rejected])

    async def _send(self, client: SegmentClient, batch: list[dict[str, Any]]
                    ) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], str]]]:
        try:
            delivered, rejected = await client.send_isolating(batch, sent_at=iso(self._clock.now()))
        except SegmentSendAborted:
            if self._on_batch is not None:
                self._on_batch("failed", 0)
            raise
        if self._on_batch is not None:
            self._on_batch("ok", len(delivered))
        log.info("sync.batch_sent", messages=len(delivered), rejected=len(rejected))
        for m, reason in rejected:
            log.warning("sync.message_rejected", message_id=m["messageId"], reason=reason[:200])
        return delivered, rejected


SYNCER = web.AppKey("syncer", Syncer)
