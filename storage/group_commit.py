"""Group commit: concurrent intake requests share one transaction, and each is answered only
after that transaction has committed. Throughput comes from amortising the fsync, not from
acknowledging early."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from jobs.clock import Clock
from storage.book_rules import BookRules
from storage.db import Database, StoreUnavailable
from storage.events import Message
from storage.intake_store import record_messages
from storage.survey_plan import Planner

log = structlog.get_logger("npsd.intake")


@dataclass
class CommitStats:
    requests: int
    accepted: dict[str, int]  # by message type
    duplicates: int
    seconds: float


@dataclass
class _Job:
    messages: list[Message]
    future: asyncio.Future[list[bool]] = field(repr=False)


class GroupCommitter:
    def __init__(
        self, db: Database, clock: Clock, rules: Callable[[], BookRules],
        planner: Callable[[], Planner | None], *, max_messages: int = 2000,
        on_commit: Callable[[CommitStats], None] | None = None,
    ) -> None:
        self._db, self._clock, self._rules, self._planner = db, clock, rules, planner
        self._max = max_messages
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._on_commit = on_commit

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="intake-group-commit")

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    async def submit(self, messages: list[Message]) -> list[bool]:
        if self._task is None or self._task.done():
            raise StoreUnavailable("the intake writer is not running")
        future: asyncio.Future[list[bool]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Job(messages, future))
        return await future

    async def stop(self) -> None:
        """Finish what was submitted, then stop."""
        if self._task is None:
            return
        await self._queue.join()
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            if not self._task.cancelled():
                raise
        self._task = None

    async def _run(self) -> None:
        while True:
            jobs = [await self._queue.get()]
            size = len(jobs[0].messages)
            while size < self._max and not self._queue.empty():
                job = self._queue.get_nowait()
                jobs.append(job)
                size += len(job.messages)
            try:
                await self._commit(jobs)
            finally:
                for _ in jobs:
                    self._queue.task_done()

    async def _commit(self, jobs: list[_Job]) -> None:
        live = [j for j in jobs if not j.future.done()]
        if not live:
            return
        try:
            await self._commit_together(live)
        except Exception as exc:
            if len(live) == 1:
                _fail(live[0], exc)
                return
            # One request's trouble must not fail the others: retry them one by one.
            for job in live:
                try:
                    await self._commit_together([job])
                except Exception as single:
                    _fail(job, single)

    async def _commit_together(self, jobs: list[_Job]) -> None:
        messages = [m for j in jobs for m in j.messages]
        started = time.perf_counter()
        recorded = await record_messages(
            self._db, messages, self._rules(), self._planner(), self._clock.now()
        )
        seconds = time.perf_counter() - started
        offset = 0
        for job in jobs:
            part = recorded.new[offset: offset + len(job.messages)]
            offset += len(job.messages)
            if not job.future.done():
                job.future.set_result(part)
        accepted: dict[str, int] = {}
        for message, new in zip(messages, recorded.new, strict=True):
            if new:
                accepted[message.type] = accepted.get(message.type, 0) + 1
        stats = CommitStats(len(jobs), accepted, len(messages) - sum(accepted.values()), seconds)
        # One line per committed group, not per request: at load a group is many requests.
        log.info("intake.accepted", requests=stats.requests, accepted=sum(accepted.values()),
                 duplicates=stats.duplicates, commit_ms=round(seconds * 1000, 1))
        for user_id, due_at in recorded.scheduled:
            log.info("survey.scheduled", user_id=user_id, due_at=due_at.isoformat())
        if self._on_commit is not None:
            self._on_commit(stats)


def _fail(job: _Job, exc: BaseException) -> None:
    if isinstance(exc, StoreUnavailable):
        log.warning("intake.commit_failed", reason=str(exc))
        error: BaseException = exc
    else:
        log.exception("intake.commit_error", error=exc.__class__.__name__)
        error = StoreUnavailable(f"{exc.__class__.__name__} while committing")
    if not job.future.done():
        job.future.set_exception(error)
