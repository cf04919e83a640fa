"""Group commit: concurrent intake requests share one transaction, and each is answered only
after that transaction has committed. Throughput comes from amortising the fsync, not from
acknowledging early.

On SQLite the groups are taken by the intake writer's own thread, on its own connection
(storage/sqlite_writer.py): once a group has committed, the thread hands the answers to the
event loop and starts on the requests that arrived meanwhile at once, instead of waiting
for the loop to come round and send it the next group (under load that round trip was
longer than the commit itself). When none has arrived yet it lingers a moment, keeping the
writing turn, for the loop to hand over the next group: a threading.Event set once the loop
has run every request handler that was ready, so the group is whole. It gives this
process's writing turn back after DRAIN_BUDGET_S so the other writers (dispatch, answers)
get theirs.
On PostgreSQL the event loop forms the groups and runs them through asyncpg.

What waits for a commit is bounded (MAX_QUEUED_MESSAGES, MAX_QUEUED_BYTES of request
bodies): while the store is stalled, a request past the bound is refused at once with
CommitQueueFull (the doors answer 503 with Retry-After, and Segment retries) instead of
holding its messages in memory for as long as the stall lasts.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import structlog

from storage.db import Database, StoreUnavailable
from storage.events import Message
from storage.fast_path import Values
from storage.intake_store import Recorded, record, record_messages
from storage.sqlite_writer import run_transaction
from storage.store import IntakePolicy
from storage.user_cache import UserRowCache

log = structlog.get_logger("npsd.intake")

DRAIN_BUDGET_S = 0.05
# Ten full groups: at the measured ~25,000 events/s a queue this deep is drained in under a
# second, so a healthy store never reaches it, while a stalled one stops taking new work
# after ~10 groups' worth of parsed messages (~100 MB at worst-case message sizes; the
# bytes bound below comes first for large messages).
MAX_QUEUED_MESSAGES = 20_000
# Request bodies behind the queued messages: four default-sized Segment batches.
MAX_QUEUED_BYTES = 64 * 1024 * 1024
# How long the writer thread waits for the next group before giving the writing turn back:
# more than one round of a busy event loop, little enough not to hold up other writers.
LINGER_S = 0.005


class Clock(Protocol):
    """What the writer needs of jobs.clock's clock, which the daemon passes in: storage
    reads the time only through it and does not import jobs."""

    def now(self) -> datetime: ...


class CommitQueueFull(StoreUnavailable):
    """Too much already waits for the store: retry later."""


@dataclass
class CommitStats:
    requests: int
    accepted: dict[str, int]  # by message type
    duplicates: int
    seconds: float


@dataclass
class _Job:
    messages: list[Message]
    policy: IntakePolicy
    future: asyncio.Future[list[bool]] = field(repr=False)
    nbytes: int = 0
    done: bool = False  # answered or failed: no longer counted in the queue


class GroupCommitter:
    def __init__(
        self, db: Database, clock: Clock, *, max_messages: int = 2000,
        on_commit: Callable[[CommitStats], None] | None = None,
        max_queued_messages: int = MAX_QUEUED_MESSAGES,
        max_queued_bytes: int = MAX_QUEUED_BYTES,
        on_erasure: Callable[[], None] | None = None,
    ) -> None:
        self._db, self._clock = db, clock
        self._max = max_messages
        self.max_queued_messages, self.max_queued_bytes = max_queued_messages, max_queued_bytes
        self._queued_messages = 0  # submitted and not yet answered
        self._queued_bytes = 0
        # Appended on the loop, taken by the loop (PostgreSQL) or the writer thread (SQLite):
        # deque's append and popleft are atomic.
        self._pending: deque[_Job] = deque()
        self._wake = asyncio.Event()
        self._more = threading.Event()  # the loop has handed over a group (SQLite)
        self._hand_over_soon = False
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._on_commit = on_commit
        self._on_erasure = on_erasure  # after a commit that erased someone
        self._loop: asyncio.AbstractEventLoop | None = None
        self._users = UserRowCache()  # the writer thread's (SQLite)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._closing = False
        self._hand_over_soon = False  # a callback scheduled on an earlier loop never ran
        self._task = asyncio.create_task(self._run(), name="intake-group-commit")

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    @property
    def queued(self) -> tuple[int, int]:
        """(messages, body bytes) submitted and not yet answered."""
        return self._queued_messages, self._queued_bytes

    async def submit(self, messages: list[Message], policy: IntakePolicy,
                     nbytes: int = 0) -> list[bool]:
        """Commit `messages` (from a body of `nbytes`) with whatever else waits; their
        new/duplicate flags once committed. A group applies its newest job's policy (they
        differ only across a SIGHUP)."""
        if self._task is None or self._task.done() or self._closing:
            raise StoreUnavailable("the intake writer is not running")
        self._admit(len(messages), nbytes)
        future: asyncio.Future[list[bool]] = asyncio.get_running_loop().create_future()
        # Counted until committed or failed, even when its sender has gone meanwhile.
        self._pending.append(_Job(messages, policy, future, nbytes))
        self._wake.set()
        if not self._hand_over_soon:
            # Called back once the handlers that are ready now have all run.
            self._hand_over_soon = True
            asyncio.get_running_loop().call_soon(self._hand_over)
        return await future

    def _admit(self, count: int, nbytes: int) -> None:
        # One request is always admitted into an empty queue, however large it is.
        if self._queued_messages and (
            self._queued_messages + count > self.max_queued_messages
            or self._queued_bytes + nbytes > self.max_queued_bytes
        ):
            raise CommitQueueFull(
                f"{self._queued_messages} messages already wait for the store")
        self._queued_messages += count
        self._queued_bytes += nbytes

    def _release(self, job: _Job) -> None:
        if not job.done:
            job.done = True
            self._queued_messages -= len(job.messages)
            self._queued_bytes -= job.nbytes

    def _hand_over(self) -> None:
        self._hand_over_soon = False
        self._more.set()

    async def stop(self) -> None:
        """Finish what was submitted, then stop."""
        if self._task is None:
            return
        self._closing = True
        self._wake.set()
        self._more.set()
        try:
            await self._task
        finally:
            self._task = None

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                if self._db.dialect.writer_thread:
                    await self._drain_in_thread()
                    await asyncio.sleep(0)  # let a waiting writer have the connection
                else:
                    await self._commit(self._take())
            if self._closing:
                return

    def _take(self) -> list[_Job]:
        jobs: list[_Job] = []
        size = 0
        while self._pending and size < self._max:
            job = self._pending.popleft()
            jobs.append(job)
            size += len(job.messages)
        return jobs

    # --- SQLite: the writer thread takes the groups ---------------------------------------
    async def _drain_in_thread(self) -> None:
        try:
            await self._db.in_writer_thread(self._drain)
        except Exception as exc:  # the connection could not even be had: fail what waits
            while self._pending:
                for job in self._take():
                    self._fail(job, exc)

    def _drain(self, conn: sqlite3.Connection) -> bool:
        """In the writer thread: commit groups until none waits or the budget is spent.
        Returns False when a commit failed (the connection is then replaced)."""
        healthy = True
        deadline = time.monotonic() + DRAIN_BUDGET_S
        while True:
            self._more.clear()  # before taking: a hand-over from now on is seen
            jobs = self._take()
            if jobs:
                healthy = self._commit_in_thread(conn, jobs) and healthy
            left = deadline - time.monotonic()
            if left <= 0 or self._closing:
                return healthy
            if not jobs and not self._more.wait(min(left, LINGER_S)):
                return healthy

    def _commit_in_thread(self, conn: sqlite3.Connection, jobs: list[_Job]) -> bool:
        try:
            self._deliver_soon(jobs, self._record_in_thread(conn, jobs))
            return True
        except Exception as exc:
            if len(jobs) == 1:
                self._fail_soon(jobs[0], exc)
                return False
        # One request's trouble must not fail the others: retry them one by one.
        for job in jobs:
            try:
                self._deliver_soon([job], self._record_in_thread(conn, [job]))
            except Exception as single:
                self._fail_soon(job, single)
        return False

    def _record_in_thread(self, conn: sqlite3.Connection,
                          jobs: list[_Job]) -> tuple[Recorded, float]:
        messages = [m for j in jobs for m in j.messages]
        started = time.perf_counter()
        now = self._clock.now()
        policy = jobs[-1].policy
        self._users.bind(conn)
        steps = record(Values(self._db.dialect, now, self._users), messages, policy.book,
                       policy.planner, now, policy.loop)
        try:
            recorded = run_transaction(conn, steps)
        except BaseException as exc:
            self._users.discard()  # its rows were changed by a transaction that did not commit
            if isinstance(exc, sqlite3.Error):
                raise StoreUnavailable(f"{exc.__class__.__name__}: {str(exc)[:200]}") from exc
            raise
        self._users.committed()
        return recorded, time.perf_counter() - started

    def _deliver_soon(self, jobs: list[_Job], result: tuple[Recorded, float]) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._deliver, jobs, *result)

    def _fail_soon(self, job: _Job, exc: BaseException) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._fail, job, exc)

    # --- PostgreSQL: the loop forms the groups ------------------------------------------
    async def _commit(self, jobs: list[_Job]) -> None:
        live = [j for j in jobs if not j.future.done()]
        for job in jobs:
            if job.future.done():  # its sender has gone: nothing to commit or answer
                self._release(job)
        if not live:
            return
        try:
            await self._commit_together(live)
        except Exception as exc:
            if len(live) == 1:
                self._fail(live[0], exc)
                return
            for job in live:
                try:
                    await self._commit_together([job])
                except Exception as single:
                    self._fail(job, single)

    async def _commit_together(self, jobs: list[_Job]) -> None:
        messages = [m for j in jobs for m in j.messages]
        started = time.perf_counter()
        policy = jobs[-1].policy
        recorded = await record_messages(
            self._db, messages, policy.book, policy.planner, self._clock.now(), policy.loop
        )
        self._deliver(jobs, recorded, time.perf_counter() - started)

    # --- on the loop ----------------------------------------------------------------------
    def _deliver(self, jobs: list[_Job], recorded: Recorded, seconds: float) -> None:
        if recorded.erased_users:
            log.info("privacy.erased", users=recorded.erased_users,
                     surveys=len(recorded.erased_surveys))
            if self._on_erasure is not None:
                self._on_erasure()
        on_erased = jobs[-1].policy.on_erased
        if recorded.erased_surveys and on_erased is not None:
            # Before the senders are answered: what the erasure left outside the database
            # (.eml files) is gone when the deletion request is acknowledged.
            try:
                on_erased(recorded.erased_surveys)
            except Exception as exc:  # housekeeping removes them later
                log.warning("privacy.files_not_removed", error=exc.__class__.__name__)
        offset = 0
        accepted: dict[str, int] = {}
        for job in jobs:
            part = recorded.new[offset: offset + len(job.messages)]
            offset += len(job.messages)
            self._release(job)
            if not job.future.done():
                job.future.set_result(part)
            for message, new in zip(job.messages, part, strict=True):
                if new:
                    accepted[message.type] = accepted.get(message.type, 0) + 1
        stats = CommitStats(len(jobs), accepted, offset - sum(accepted.values()), seconds)
        # One line per committed group, not per request: at load a group is many requests.
        log.info("intake.accepted", requests=stats.requests, accepted=sum(accepted.values()),
                 duplicates=stats.duplicates, commit_ms=round(seconds * 1000, 1))
        for user_id, due_at in recorded.scheduled:
            log.info("survey.scheduled", user_id=user_id, due_at=due_at.isoformat())
        if self._on_commit is not None:
            self._on_commit(stats)

    def _fail(self, job: _Job, exc: BaseException) -> None:
        self._release(job)
        if isinstance(exc, StoreUnavailable):
            log.warning("intake.commit_failed", reason=str(exc))
            error: BaseException = exc
        else:
            log.error("intake.commit_error", error=exc.__class__.__name__, exc_info=exc)
            error = StoreUnavailable(f"{exc.__class__.__name__} while committing")
        if not job.future.done():
            job.future.set_exception(error)
