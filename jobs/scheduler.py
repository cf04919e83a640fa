"""APScheduler 3.11 as the clock only (in-memory store): it ticks the dispatcher at least
every 2 seconds and when the earliest survey falls due, the alert and webhook deliverer
every second, runs the daily sync-back as a cron job in segment.timezone, and
housekeeping. All pending work lives in our own tables."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from jobs.clock import Clock
from jobs.deliveries import Deliverer
from jobs.dispatch import Dispatcher
from jobs.sync import Syncer
from jobs.timing import missed_daily_run
from settings import SegmentSettings
from storage.store import Store

log = structlog.get_logger("npsd.scheduler")

TICK_S = 2.0
DELIVERY_TICK_S = 1.0  # an alert or webhook leaves within about a second of the answer
_JOB = {"max_instances": 1, "coalesce": True, "misfire_grace_time": None}


def sync_trigger(s: SegmentSettings) -> CronTrigger:
    return CronTrigger(hour=s.sync_at.hour, minute=s.sync_at.minute, timezone=s.timezone)


class Schedule:
    def __init__(self, store: Store, clock: Clock, dispatcher: Dispatcher,
                 syncer: Syncer, segment: Callable[[], SegmentSettings],
                 housekeeping: Callable[[], Awaitable[Any]],
                 deliverer: Deliverer | None = None) -> None:
        self._store, self._clock = store, clock
        self._deliverer = deliverer
        self._dispatcher, self._syncer = dispatcher, syncer
        self._segment, self._housekeeping = segment, housekeeping
        self.scheduler = AsyncIOScheduler(timezone=UTC)
        self._taken_over = False
        self._running: set[asyncio.Task[Any]] = set()

    def _add(self, job: Callable[[], Awaitable[Any]], trigger: Any, **options: Any) -> None:
        self.scheduler.add_job(self._tracked(job), trigger, **options)

    def _tracked(self, job: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[None]]:
        """A job whose run `stop` can wait for. APScheduler 3's shutdown cancels running
        jobs and logs each as an error; a job cut short past the grace is a warning."""
        @functools.wraps(job)
        async def run() -> None:
            task = asyncio.current_task()
            assert task is not None
            self._running.add(task)
            try:
                await job()
            except asyncio.CancelledError:
                log.warning("shutdown.job_cancelled", job=getattr(job, "__name__", "job"))
            finally:
                self._running.discard(task)
        return run

    def start(self) -> None:
        now = datetime.now(UTC)
        self._add(self.dispatch, "interval", seconds=TICK_S, id="dispatch",
                  next_run_time=now, **_JOB)
        self._add(self._housekeeping, "interval", seconds=60, id="housekeeping",
                  next_run_time=now, **_JOB)
        self._add(self.catch_up_sync, "date", run_date=now, id="sync-catch-up",
                  misfire_grace_time=None)
        if self._deliverer is not None:
            self._add(self.deliver, "interval", seconds=DELIVERY_TICK_S,
                      id="deliveries", next_run_time=now, **_JOB)
        self.reschedule_sync()
        self.scheduler.start()

    def reschedule_sync(self) -> None:
        s = self._segment()
        if not s.enabled:
            if self.scheduler.get_job("sync"):
                self.scheduler.remove_job("sync")
            return
        self._add(self.daily_sync, sync_trigger(s), id="sync",
                  replace_existing=True, **_JOB)

    def wake(self) -> None:
        """Run the dispatcher now (an identify made a survey due at once)."""
        if self.scheduler.running:
            self._add(self.dispatch, "date", run_date=datetime.now(UTC),
                      id="dispatch-now", replace_existing=True,
                      misfire_grace_time=None)

    async def dispatch(self) -> None:
        await self._dispatcher.run_once()
        if self._dispatcher.stopping:
            return  # shutting down: nothing more to schedule
        earliest = await self._store.earliest_due()
        if earliest is None:
            return
        wait = (earliest - self._clock.now()).total_seconds()
        if 0 < wait < TICK_S:
            self._add(self.dispatch, "date",
                      run_date=datetime.now(UTC) + timedelta(seconds=wait),
                      id="dispatch-next", replace_existing=True,
                      misfire_grace_time=None)

    async def deliver(self) -> None:
        assert self._deliverer is not None
        if not self._taken_over:
            # Once per start: what a crashed process on this host had claimed is due now.
            await self._deliverer.take_over_dead()
            self._taken_over = True
        await self._deliverer.run_once()

    async def daily_sync(self) -> None:
        await self._syncer.run("daily")

    async def catch_up_sync(self) -> None:
        """A daily run missed while npsd was down runs once at start."""
        s = self._segment()
        if not s.enabled:
            return
        started, _ = await self._store.last_sync()
        if missed_daily_run(started, self._clock.now(), s.sync_at, s.timezone):
            log.info("sync.catch_up")
            await self._syncer.run("catch-up")

    def pause(self) -> None:
        """No job starts from now on; the ones running go on."""
        if self.scheduler.running:
            self.scheduler.pause()

    async def stop(self, grace: float) -> None:
        """Let the running jobs finish within `grace` seconds, then stop the clock."""
        self.pause()
        if self._running:
            _, late = await asyncio.wait(set(self._running), timeout=grace)
            if late:
                log.warning("shutdown.jobs_timeout", running=len(late))
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
