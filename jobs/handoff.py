"""The hand-off journal: a survey counts as handed off only from the moment its own SMTP
transaction starts, and that moment is durable before the transaction goes on.

Each sender, holding one SMTP connection, asks `mark(survey)` just before MAIL FROM; the
mark is committed before DATA. One writer task groups the marks of all connections, and the
outcomes of the messages they sent before, into one commit (storage `settle`): under load a
commit carries one mark and one outcome per connection, so the fsync is shared instead of
paid per message, and the claims waiting behind them stay merely leased (a dead process's
leased claims return to the queue for a survivor). A sender records its outcome with
`record()` before it gives its connection up, so when a mark commits, the outcome of the
previous message on that connection is in the same commit or an earlier one: at any moment
at most one survey per connection (`limit`) is marked and not settled. Those are what a
kill leaves uncertain; they are recorded failed "interrupted", never sent twice.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog

from jobs.clock import Clock
from storage.store import Store
from storage.surveys import Outcome

log = structlog.get_logger("npsd.survey")

RETRY_S = 0.5  # a failed commit's outcomes are tried again this soon
RETRIES_AT_CLOSE = 3  # then, when closing, they are left to the leases (recorded interrupted)
FLUSH_S = 1.0  # outcomes alone (no mark waiting) are committed this soon
LINGER_S = 0.002  # a commit waits this long at most for the other connections' marks


@dataclass
class _Queue:
    marks: list[tuple[int, bool, asyncio.Future[bool]]] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)


class HandoffJournal:
    """`async with HandoffJournal(...) as journal:` runs the writer; leaving it commits
    what is queued. `limit` hand-offs may be open (marked, outcome not yet recorded) at
    once: a `mark` beyond it waits."""

    def __init__(self, store: Store, clock: Clock, owner: str, *, lease: timedelta,
                 renew_every: timedelta, interval: timedelta | None, limit: int) -> None:
        self._store, self._clock, self._owner = store, clock, owner
        self._lease, self._renew_every, self._interval = lease, renew_every, interval
        self._limit = max(1, limit)
        self._open = asyncio.Semaphore(self._limit)
        self._queue = _Queue()
        self._wake = asyncio.Event()
        self._closing = False
        # Claims are taken with a fresh lease: the first renewal is due RENEW_EVERY from now
        # (an idle dispatcher tick commits nothing).
        self._renewed: datetime | None = clock.now()
        self._task: asyncio.Task[None] | None = None
        self._failures = 0  # commits failed in a row
        self.commits = 0

    async def __aenter__(self) -> HandoffJournal:
        self._task = asyncio.create_task(self._run(), name="dispatch-handoff-journal")
        self._task.add_done_callback(self._refuse_waiting)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task

    async def mark(self, survey_id: int, *, reminder: bool = False) -> bool:
        """Commit that this survey's SMTP transaction starts now. True: send it, then call
        `record` (also when sending failed). False: it is no longer ours to send (erased,
        unsubscribed, taken over, or the store could not commit): do not send it."""
        await self._open.acquire()
        if self._task is None or self._task.done():
            self._open.release()
            return False  # the writer has stopped: nothing can be handed off
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.marks.append((survey_id, reminder, future))
        self._wake.set()
        try:
            ours = await future
        except BaseException:
            self._open.release()
            raise
        if not ours:
            self._open.release()
        return ours

    def record(self, outcome: Outcome, *, handed_off: bool) -> None:
        """Queue an outcome for the next commit; `handed_off`: its `mark` returned True.
        Synchronous on purpose: called before the sender gives its connection back, the
        outcome is queued before the next mark on that connection can be. It rides with
        the next marks' commit (no commit of its own while marks keep coming)."""
        self._queue.outcomes.append(outcome)
        if handed_off:
            self._open.release()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), FLUSH_S)
            self._wake.clear()
            await self._linger()
            now = self._clock.now()
            renew = self._renewed is None or not (
                timedelta(0) <= now - self._renewed < self._renew_every)
            if self._queue.marks or self._queue.outcomes or renew:
                queue, self._queue = self._queue, _Queue()
                await self._commit(queue, now, renew)
            if self._closing and not (self._queue.marks or self._queue.outcomes):
                return

    async def _linger(self) -> None:
        """Under load the connections' next marks come within a fraction of a millisecond
        of each other: wait that long (LINGER_S at most) so that one commit carries them
        all, instead of a commit for the first and another for the rest."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LINGER_S
        while 0 < len(self._queue.marks) < self._limit and not self._closing:
            left = deadline - loop.time()
            if left <= 0:
                return
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), left)

    def _refuse_waiting(self, _task: asyncio.Task[None]) -> None:
        """However the writer ended, no mark waits for it forever."""
        for _, _, future in self._queue.marks:
            if not future.done():
                future.set_result(False)

    async def _commit(self, queue: _Queue, now: datetime, renew: bool) -> None:
        try:
            mine = await self._store.settle(
                queue.outcomes, now, owner=self._owner, lease=self._lease,
                handoff=[i for i, reminder, _ in queue.marks if not reminder], renew=renew,
                interval=self._interval,
                reminders=[i for i, reminder, _ in queue.marks if reminder])
        except Exception as exc:
            # Nothing of this commit happened: its marks are refused (those surveys stay
            # claimed and go back to the queue), its outcomes are tried again.
            log.warning("survey.handoff_failed", marks=len(queue.marks),
                        outcomes=len(queue.outcomes), error=exc.__class__.__name__)
            for _, _, future in queue.marks:
                if not future.done():
                    future.set_result(False)
            self._failures += 1
            if self._closing and self._failures >= RETRIES_AT_CLOSE:
                return  # their surveys stay handed off: taken back as interrupted
            self._queue.outcomes[:0] = queue.outcomes
            if queue.outcomes:
                await asyncio.sleep(RETRY_S)
                self._wake.set()
            return
        self._failures = 0
        self.commits += 1
        if renew:
            self._renewed = now
        for survey_id, _, future in queue.marks:
            if not future.done():
                future.set_result(survey_id in mine)
