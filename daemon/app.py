"""create_app: the aiohttp application, with the store, the email backend, the HTTP client
and the scheduler as cleanup contexts, started in dependency order and stopped in reverse.

One store is built here and passed down; every background task runs under the runtime's
supervisor (daemon/supervisor.py), which stops the daemon when one dies."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import structlog
from aiohttp import web

from daemon import admin_api, console, health, intake, survey_page, tracking_api, unmatched
from daemon.config import Settings
from daemon.metrics import Metrics
from daemon.runtime import RUNTIME, Runtime
from daemon.survey_page import PAGE_BODY_LIMIT
from daemon.watchdog import watchdog_loop
from jobs.clock import Clock, SystemClock
from jobs.deliveries import Deliverer
from jobs.dispatch import Dispatcher
from jobs.email import EmailBackend, make_backend
from jobs.housekeeping import housekeeping
from jobs.scheduler import Schedule
from jobs.sync import SYNCER, Syncer
from storage.db import StoreUnavailable
from storage.sql_store import SqlStore

log = structlog.get_logger("npsd")

EMAIL = web.AppKey("email", EmailBackend)
REFUSAL_FLUSH_S = 10.0
SCHEDULE = web.AppKey("schedule", Schedule)
DISPATCHER = web.AppKey("dispatcher", Dispatcher)
DELIVERER = web.AppKey("deliverer", Deliverer)
WRITER_TASK = "intake-group-commit"


def create_app(settings: Settings, *, clock: Clock | None = None,
               config_path: Path | None = None, run_jobs: bool = True) -> web.Application:
    clock = clock or SystemClock()
    metrics = Metrics()
    store = SqlStore(settings.storage.url, clock, on_commit=metrics.count_commit)
    runtime = Runtime(settings=settings, clock=clock, store=store, metrics=metrics,
                      config_path=config_path)
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


def intake_routes(app: web.Application) -> None:
    app.router.add_post("/v1/segment", intake.segment_intake,
                        expect_handler=intake.segment_expect)
    tracking_api.add_routes(app)
    admin_api.add_routes(app)
    console.add_routes(app)
    survey_page.add_routes(app)
    health.add_routes(app)
    unmatched.add_route(app)  # last: it takes what no route above does


async def store_ctx(app: web.Application) -> AsyncIterator[None]:
    runtime = app[RUNTIME]
    async with runtime.store as store:
        if store.writer_task is not None:
            runtime.supervisor.watch(WRITER_TASK, store.writer_task)
        log.info("storage.ready", backend=store.dialect)
        yield
        runtime.supervisor.forget(WRITER_TASK)


async def email_ctx(app: web.Application) -> AsyncIterator[None]:
    runtime = app[RUNTIME]
    app[EMAIL] = make_backend(runtime.settings.email, runtime.clock)
    yield
    await app[EMAIL].close()


def _jobs(app: web.Application, session: aiohttp.ClientSession
          ) -> tuple[Dispatcher, Syncer, Schedule, Deliverer]:
    runtime = app[RUNTIME]
    m = runtime.metrics
    dispatcher = Dispatcher(runtime.store, runtime.clock, runtime.owner,
                            lambda: runtime.settings, lambda: app[EMAIL],
                            on_email=lambda r: m.emails.labels(r).inc())

    def on_batch(result: str, n: int) -> None:
        m.sync_batches.labels(result).inc()
        m.sync_messages.inc(n)

    syncer = Syncer(runtime.store, runtime.clock, runtime.owner,
                    lambda: runtime.settings.segment, session, on_batch=on_batch)

    async def tidy() -> None:
        await housekeeping(runtime.store, runtime.clock.now(),
                           runtime.settings.intake.dedup_window, runtime.outbox_dir())

    deliverer = Deliverer(runtime.store, runtime.clock, runtime.owner,
                          lambda: runtime.settings, lambda: app[EMAIL], session,
                          on_result=lambda c, r: m.deliveries.labels(c, r).inc())
    schedule = Schedule(runtime.store, runtime.clock, dispatcher, syncer,
                        lambda: runtime.settings.segment, tidy, deliverer)
    return dispatcher, syncer, schedule, deliverer


async def jobs_ctx(app: web.Application) -> AsyncIterator[None]:
    runtime = app[RUNTIME]
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
    dispatcher, syncer, schedule, deliverer = _jobs(app, session)
    app[SYNCER], app[SCHEDULE], app[DISPATCHER] = syncer, schedule, dispatcher
    app[DELIVERER] = deliverer
    schedule.start()
    runtime.supervisor.start("dispatch-waker", _wake_on_identify(runtime, schedule))
    yield
    dispatcher.stopping = deliverer.stopping = True
    schedule.pause()
    await runtime.supervisor.stop("dispatch-waker")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + runtime.settings.server.shutdown_timeout.total_seconds()
    try:
        # Let an in-flight dispatch chunk finish and record its outcomes first: APScheduler
        # 3's shutdown cancels the jobs it is running (even a chunk whose emails are sent).
        async with asyncio.timeout_at(deadline):
            await dispatcher.idle()
            await dispatcher.release_claims()
            await deliverer.release_claims()
    except TimeoutError:
        log.warning("shutdown.dispatch_timeout")
    except StoreUnavailable as exc:
        log.warning("shutdown.release_failed", reason=str(exc))
    await schedule.stop(max(0.0, deadline - loop.time()))
    await session.close()


async def _wake_on_identify(runtime: Runtime, schedule: Schedule) -> None:
    while True:
        await runtime.wake_dispatcher.wait()
        runtime.wake_dispatcher.clear()
        schedule.wake()
        await asyncio.sleep(0.2)  # coalesce bursts of identifies into one wake-up


async def watchdog_ctx(app: web.Application) -> AsyncIterator[None]:
    runtime = app[RUNTIME]
    runtime.supervisor.start("watchdog", watchdog_loop(runtime))
    yield
    await runtime.supervisor.stop("watchdog")


async def _flush_refusals(runtime: Runtime) -> None:
    """Writes the `intake.refused_suppressed` count of a window that is over even when no
    further refusal comes to trigger it."""
    while True:
        await asyncio.sleep(REFUSAL_FLUSH_S)
        runtime.refusals.flush()


async def refusals_ctx(app: web.Application) -> AsyncIterator[None]:
    runtime = app[RUNTIME]
    runtime.supervisor.start("refusal-log", _flush_refusals(runtime))
    yield
    await runtime.supervisor.stop("refusal-log")
    runtime.refusals.flush()
