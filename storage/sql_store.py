"""SqlStore: the Store (storage/store.py) on SQLite or PostgreSQL through SQLAlchemy 2.

The public methods are the contract; the statements live in the concern's module
(intake_store + book_io + survey_plan for intake, surveys for the outbox, answers for the
customers, sync_store for the sync, reads for the reports, the ConsoleStore mixin for the
console), and the SQLite group-commit writer and its checkpointer are private parts this
object starts and stops.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Self

import sqlalchemy as sa
import structlog

from storage import answers, deliveries, journal, reads, surveys, sync_store
from storage.answers import SurveyView
from storage.checkpointer import Checkpointer
from storage.console_store import ConsoleStore
from storage.db import Database, StoreUnavailable
from storage.deliveries import Claimed as ClaimedDelivery
from storage.deliveries import LoopPolicy, Settled
from storage.events import Message
from storage.fast_path import Values
from storage.group_commit import MAX_QUEUED_BYTES, MAX_QUEUED_MESSAGES, Clock, CommitStats
from storage.group_commit import GroupCommitter as _Writer
from storage.import_store import ImportRow, RowOutcome, import_rows
from storage.migrations import current_version, migrate
from storage.sqlutil import EVENTS
from storage.states import AnswerResult
from storage.store import IntakePolicy
from storage.surveys import Claimed, Delivered, HandedOff, Outcome
from storage.sync_store import PendingChunk

log = structlog.get_logger("npsd.storage")


class SqlStore(ConsoleStore):
    def __init__(self, url: str, clock: Clock, *,
                 on_commit: Callable[[CommitStats], None] | None = None,
                 max_queued_messages: int = MAX_QUEUED_MESSAGES,
                 max_queued_bytes: int = MAX_QUEUED_BYTES, migrate: bool = True,
                 background: bool = True) -> None:
        """`migrate`: bring the schema up to date on entry; `background`: run the intake
        writer and the SQLite checkpointer (a CLI command that only reads does not)."""
        self.db = Database(url)
        self._clock = clock
        self._migrate, self._background = migrate, background
        self._writer = _Writer(self.db, clock, on_commit=on_commit,
                               max_queued_messages=max_queued_messages,
                               max_queued_bytes=max_queued_bytes,
                               on_erasure=self._erased)
        self._checkpointer: Checkpointer | None = None

    @property
    def dialect(self) -> str:
        return self.db.dialect.name

    async def __aenter__(self) -> Self:
        if self._migrate:
            before, after = await migrate(self.db, self._clock.now())
            if before != after:
                log.info("storage.migrated", from_version=before, to_version=after)
        if not self._background:
            return self
        if self.db.sqlite_path is not None:
            self._checkpointer = Checkpointer(self.db.sqlite_path)
            self._checkpointer.start()
        self._writer.start()
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        try:
            await self._writer.stop()
        finally:
            if self._checkpointer is not None:
                await asyncio.to_thread(self._checkpointer.stop)
                self._checkpointer = None
            await self.db.close()

    def _erased(self) -> None:
        # The write-ahead log still holds the erased rows' earlier page versions.
        if self._checkpointer is not None:
            self._checkpointer.wipe_log()

    # --- intake ---------------------------------------------------------------------------
    async def record(self, messages: list[Message], policy: IntakePolicy,
                     nbytes: int = 0) -> list[bool]:
        if not messages:
            return []
        return await self._writer.submit(messages, policy, nbytes=nbytes)

    def writer_alive(self) -> bool:
        task = self._writer.task
        return task is not None and not task.done()

    @property
    def writer_task(self) -> asyncio.Task[None] | None:
        """The intake writer's task, for the daemon's supervisor."""
        return self._writer.task

    def queued(self) -> tuple[int, int]:
        return self._writer.queued

    # --- outbox ---------------------------------------------------------------------------
    async def claim_due(self, now: datetime, owner: str, limit: int,
                        lease: timedelta) -> list[Claimed]:
        return await surveys.claim_due(self.db, now, owner, limit, lease)

    async def settle(self, outcomes: list[Outcome], now: datetime, *, owner: str,
                     lease: timedelta, handoff: list[int] | None = None,
                     renew: bool = True, interval: timedelta | None = None,
                     reminders: list[int] | None = None) -> set[int]:
        return await journal.settle(self.db, outcomes, now, owner=owner, lease=lease,
                                    handoff=handoff, renew=renew, interval=interval,
                                    reminders=reminders)

    async def release(self, owner: str | None = None, now: datetime | None = None, *,
                      delivered: Delivered | None = None) -> tuple[int, int]:
        if owner is not None:
            return await surveys.release_owner(self.db, owner, now or self._clock.now(),
                                               delivered)
        return await surveys.release_expired_leases(self.db, now or self._clock.now())

    async def handed_off(self, owner: str) -> HandedOff:
        return await surveys.handed_off(self.db, owner)

    async def release_unsent(self, owner: str) -> int:
        return await surveys.release_unsent(self.db, owner, self._clock.now())

    async def lease_owners(self, now: datetime | None = None) -> list[str]:
        return await surveys.lease_owners(self.db, now or self._clock.now())

    async def earliest_due(self) -> datetime | None:
        return await surveys.earliest_due(self.db)

    async def expire(self, now: datetime) -> int:
        return await surveys.expire_unanswered(self.db, now)

    async def existing_surveys(self, ids: set[int]) -> set[int]:
        return await sync_store.existing_surveys(self.db, ids)

    async def record_outcomes(self, outcomes: list[Outcome], now: datetime) -> None:
        await journal.record_outcomes(self.db, outcomes, now)

    async def set_email_keys(self, rows: list[tuple[int, str | None]]) -> None:
        await surveys.set_email_keys(self.db, rows)

    async def sent_per_account(self, group_ids: list[str], since: datetime
                               ) -> dict[str, int]:
        return await surveys.sent_per_account(self.db, group_ids, since)

    async def address_last_surveyed(self, keys: list[str], since: datetime
                                    ) -> dict[str, datetime]:
        return await surveys.address_last_surveyed(self.db, keys, since)

    # --- customers ------------------------------------------------------------------------
    async def survey(self, token: str) -> SurveyView | None:
        return await answers.survey_by_token(self.db, token)

    async def answer(self, token: str, score: int, comment: str | None,
                     now: datetime, loop: LoopPolicy | None = None) -> AnswerResult:
        return await answers.record_answer(self.db, token, score, comment, now, loop)

    async def unsubscribe(self, user_id: str, now: datetime,
                          loop: LoopPolicy | None = None) -> bool:
        return await answers.unsubscribe(self.db, user_id, now, loop)

    async def erase(self, user_id: str, policy: IntakePolicy) -> None:
        # A deletion message through the writer: the very path of a Segment `delete`.
        message = Message(message_id=f"npsd-erase-{uuid.uuid4()}", type="delete",
                          user_id=user_id, anonymous_id=None, timestamp=self._clock.now())
        await self._writer.submit([message], policy)

    async def import_answers(self, rows: list[ImportRow], source: str, now: datetime, *,
                             sync: bool, write: bool = True) -> list[RowOutcome]:
        if not rows:
            return []
        steps = import_rows(Values(self.db.dialect, now), rows, source, now, sync=sync,
                            write=write)
        return await self.db.run_steps(steps, write=write, bulk=True)

    # --- alerts and webhooks -------------------------------------------------------------
    async def claim_deliveries(self, now: datetime, owner: str, limit: int,
                               lease: timedelta) -> list[ClaimedDelivery]:
        return await deliveries.claim(self.db, now, owner, limit, lease)

    async def settle_deliveries(self, outcomes: list[Settled], now: datetime,
                                owner: str) -> None:
        await deliveries.settle(self.db, outcomes, now, owner)

    async def delivery_lease_owners(self) -> list[str]:
        return await deliveries.lease_owners(self.db)

    async def release_deliveries(self, owner: str) -> int:
        return await deliveries.release(self.db, owner)

    async def replay_dead(self, now: datetime, since: datetime | None = None) -> int:
        return await deliveries.replay_dead(self.db, now, since)

    async def delivery_counts(self, now: datetime) -> dict[str, Any]:
        return await deliveries.counts(self.db, now)

    async def prune_deliveries(self, before: datetime) -> int:
        return await deliveries.prune(self.db, before)

    # --- sync -----------------------------------------------------------------------------
    async def acquire_sync_lease(self, owner: str, now: datetime, lease: timedelta) -> bool:
        return await sync_store.acquire_lease(self.db, owner, now, lease)

    async def renew_sync_lease(self, owner: str, now: datetime, lease: timedelta) -> bool:
        return await sync_store.renew_lease(self.db, owner, now, lease)

    async def sync_lease_holder(self) -> str | None:
        return await sync_store.holder(self.db)

    async def break_sync_lease(self, dead_holder: str) -> None:
        await sync_store.break_lease(self.db, dead_holder)

    async def release_sync_lease(self, owner: str, now: datetime, result: str, sent: int,
                                 failed: int) -> None:
        await sync_store.release_lease(self.db, owner, now, result, sent, failed)

    async def last_sync(self) -> tuple[datetime | None, datetime | None]:
        return await sync_store.last_sync(self.db)

    async def pending_chunk(self, limit: int, after_id: int, *,
                            with_accounts: bool) -> PendingChunk:
        return await sync_store.pending_chunk(self.db, limit, after_id,
                                              with_accounts=with_accounts)

    async def checkpoint(self, revisions: list[tuple[int, int]],
                         failures: list[dict[str, Any]], now: datetime,
                         renew: tuple[str, timedelta] | None = None) -> None:
        await sync_store.checkpoint(self.db, revisions, failures, now, renew)

    async def pending_unsubscribes(self, limit: int) -> list[tuple[str, datetime]]:
        return await sync_store.pending_unsubscribes(self.db, limit)

    async def mark_unsubscribes_synced(self, user_ids: list[str]) -> None:
        await sync_store.mark_unsubscribes_synced(self.db, user_ids)

    # --- reads ----------------------------------------------------------------------------
    async def user(self, some_id: str) -> dict[str, Any] | None:
        return await reads.get_user(self.db, some_id)

    async def user_exists(self, some_id: str) -> bool:
        return await reads.user_exists(self.db, some_id)

    async def account(self, group_id: str) -> dict[str, Any] | None:
        return await reads.get_account(self.db, group_id)

    async def nps(self, by: str | None = None) -> dict[str, Any]:
        return await reads.nps_report(self.db, by)

    async def account_figures(self, group_ids: list[str]) -> dict[str, dict[str, Any]]:
        return await reads.account_figures(self.db, group_ids)

    async def decisions(self, some_id: str) -> list[dict[str, Any]] | None:
        return await reads.decisions(self.db, some_id)

    async def status(self, now: datetime) -> dict[str, Any]:
        found = await reads.status(self.db, now)
        found["deliveries"] = await deliveries.counts(self.db, now)
        return found

    # --- health ---------------------------------------------------------------------------
    async def ping(self, timeout_s: float) -> bool:
        try:
            async with asyncio.timeout(timeout_s), self.db.read() as conn:
                await conn.execute(sa.select(sa.literal(1)))
        except (TimeoutError, StoreUnavailable, OSError):
            return False
        return True

    async def schema_version(self) -> int | None:
        return await current_version(self.db)

    async def prune(self, before: datetime, slice_size: int) -> int:
        pruned = 0
        while True:
            async with self.db.write() as conn:
                old = (sa.select(EVENTS.c.message_id)
                       .where(EVENTS.c.received_at < before).limit(slice_size))
                done = (await conn.execute(sa.delete(EVENTS).where(
                    EVENTS.c.message_id.in_(old.scalar_subquery())))).rowcount
            pruned += done
            if done < slice_size:
                return pruned
