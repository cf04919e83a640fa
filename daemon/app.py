"""create_app: the aiohttp application, with the store, the email backend, the HTTP client
and the scheduler as cleanup contexts, started in dependency order and stopped in reverse."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import structlog
from aiohttp import web

from daemon import admin_api, console, health, intake, survey_page, tracking_api
from daemon.config import Settings
from daemon.metrics import Metrics
from daemon.runtime import RUNTIME, Runtime
from daemon.survey_page import PAGE_BODY_LIMIT
from daemon.watchdog import watchdog_loop
from jobs import outbox
from jobs.clock import Clock, SystemClock
from jobs.dispatch import Dispatcher
from jobs.email import EmailBackend, make_backend
from jobs.housekeeping import housekeeping
from jobs.planning import make_planner
from jobs.scheduler import Schedule
from jobs.sync import SYNCER, Syncer
from storage.checkpointer import Checkpointer
from storage.db import Database, StoreUnavailable
from storage.group_commit import GroupCommitter
from storage.migrations import migrate

log = structlog.get_logger("npsd")

EMAIL = web.AppKey("email", EmailBackend)
REFUSAL_FLUSH_S = 10.0
SCHEDULE = web.AppKey("schedule", Schedule)
DISPATCHER = web.AppKey("dispatcher", Dispatcher)


def create_app(settings: Settings, *, clock: Clock | None = None,
               config_path: Path | None = None, run_jobs: bool = True) -> web.Application:
    clock = clock or SystemClock()
    db = Database(settings.storage.url)
    metrics = Metrics()
    holder: dict[str, Runtime] = {}  # the committer reads the settings live (SIGHUP)
    committer = GroupCommitter(
        db, clock, lambda: holder["rt"].book_rules(),
        lambda: make_planner(holder["rt"].settings.survey),
        on_commit=metrics.count_commit,
        on_erased=lambda ids: _remove_outbox_files(holder["rt"], ids))
    runtime = Runtime(settings=settings, clock=clock, db=db, metrics=metrics,
                      committer=committer, config_path=config_path)
    holder["rt"] = runtime
    # Handlers read bodies through daemon/bodies.py with their own limits; this bounds any
    # request.read() or request.post() that might creep in (aiohttp's 1 MiB default is more
    # than any page form needs).
    app = web.Application(client_max_size=PAGE_BODY_LIMIT)
    app[RUNTIME] = runtime
    intake_routes(app)
    app.cleanup_ctx.append(store_ctx)
    app.cleanup_ctx.append(email_ctx)
    if run_jobs:
        app.cleanup_ctx.append(jobs_ctx)
    app.cleanup_ctx.append(watchdog_ctx)
    app.cleanup_ctx.append(refusals_ctx)
    return app


def _outbox(runtime: Runtime) -> Path | None:
    email = runtime.settings.email
    return email.file_dir if email.backend == "file" else None


def _remove_outbox_files(runtime: Runtime, survey_ids: list[int]) -> None:
    """After an erasure committed: its surveys' .eml files go too (a directory listing and
    a few unlinks, on the loop so they are gone before the request is answered; the file
    backend is for trying npsd out)."""
    directory = _outbox(runtime)
    if directory is not None:
        removed = outbox.remove_files(directory, survey_ids)
        log.info("privacy.files_removed", files=removed)


def intake_routes(app: web.Application) -> None:
    app.router.add_post("/v1/segment", intake.segment_intake,
                        expect_handler=intake.segment_expect)
    tracking_api.add_routes(app)
    admin_api.add_routes(app)
    console.add_routes(app)
    survey_page.add_routes(app)
    health.add_routes(app)


async def store_ctx(app: web.Application) -> AsyncIterator[None]:
    runtime = app[RUNTIME]
    before, after = await migrate(runtime.db, runtime.clock.now())
    if before != after:
        log.info("storage.migrated", from_version=before, to_version=after)
    checkpointer = None
    if runtime.db.sqlite_path is not None:
        checkpointer = Checkpointer(runtime.db.sqlite_path)
        checkpointer.start()
    runtime.committer.start()
    log.info("storage.ready", backend=runtime.db.dialect)
    yield
    await runtime.committer.stop()
    if checkpointer is not None:
        await asyncio.to_thread(checkpointer.stop)
    await runtime.db.close()


async def email_ctx(app: web.Application) -> AsyncIterator[None]:
    runtime = app[RUNTIME]
    app[EMAIL] = make_backend(runtime.settings.email, runtime.clock)
    yield
    await app[EMAIL].close()


async def jobs_ctx(app: web.Application) -> AsyncIterator[None]:
    runtime = app[RUNTIME]
    m = runtime.metrics
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
    dispatcher = Dispatcher(runtime.db, runtime.clock, runtime.owner, lambda: runtime.settings,
                            lambda: app[EMAIL], on_email=lambda r: m.emails.labels(r).inc())

    def on_batch(result: str, n: int) -> None:
        m.sync_batches.labels(result).inc()
        m.sync_messages.inc(n)

    syncer = Syncer(runtime.db, runtime.clock, runtime.owner, lambda: runtime.settings.segment,
                    session, on_batch=on_batch)

    async def tidy() -> None:
        await housekeeping(runtime.db, runtime.clock.now(), runtime.settings.intake.dedup_window,
                           _outbox(runtime))

    schedule = Schedule(runtime.db, runtime.clock, dispatcher, syncer,
                        lambda: runtime.settings.segment, tidy)
    app[SYNCER], app[SCHEDULE], app[DISPATCHER] = syncer, schedule, dispatcher
    schedule.start()
    waker = asyncio.create_task(_wake_on_identify(runtime, schedule), name="dispatch-waker")
    yield
    dispatcher.stopping = True
    waker.cancel()
    grace = runtime.settings.server.shutdown_timeout.total_seconds()
    try:
        # Let an in-flight dispatch chunk finish and record its outcomes first: APScheduler
        # 3's shutdown cancels the jobs it is running (even a chunk whose emails are sent).
        await asyncio.wait_for(dispatcher.idle(), timeout=grace)
        await asyncio.wait_for(dispatcher.release_claims(), timeout=grace)
    except TimeoutError:
        log.warning("shutdown.dispatch_timeout")
    except StoreUnavailable as exc:
        log.warning("shutdown.release_failed", reason=str(exc))
    schedule.shutdown()
    await session.close()


async def _wake_on_identify(runtime: Runtime, schedule: Schedule) -> None:
    while True:
        await runtime.wake_dispatcher.wait()
        runtime.wake_dispatcher.clear()
        schedule.wake()
        await asyncio.sleep(0.2)  # coalesce bursts of identifies into one wake-up


async def watchdog_ctx(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(watchdog_loop(app[RUNTIME]), name="watchdog")
    yield
    await _cancel(task)


async def _flush_refusals(runtime: Runtime) -> None:
    """Writes the `intake.refused_suppressed` count of a window that is over even when no
    further refusal comes to trigger it."""
    while True:
        await asyncio.sleep(REFUSAL_FLUSH_S)
        runtime.refusals.flush()


async def refusals_ctx(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(_flush_refusals(app[RUNTIME]), name="refusal-log")
    yield
    await _cancel(task)
    app[RUNTIME].refusals.flush()


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        if not task.cancelled():
            raise
