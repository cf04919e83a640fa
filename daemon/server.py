"""Running the daemon: listen, tell systemd we are ready, reload on SIGHUP, stop on SIGTERM.

aiohttp's AppRunner is used directly (rather than run_app) so READY=1 is sent only once the
port accepts connections, and so SIGHUP can reload without a restart."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import structlog
from aiohttp import web

from daemon import systemd
from daemon.app import DISPATCHER, EMAIL, SCHEDULE, create_app
from daemon.config import ConfigError, Settings, load_settings
from daemon.config_loop import plain_http_receivers
from daemon.logging import configure_logging
from daemon.paths import describe_store
from daemon.request_counts import server_options
from daemon.runtime import RUNTIME
from daemon.weak_secrets import is_loopback, weak_secrets
from jobs.email import EmailBackend, make_backend
from storage.db import StoreUnavailable
from storage.migrations import SchemaTooNew

log = structlog.get_logger("npsd")


def _outbox_problem(settings: Settings) -> str | None:
    """The file backend's directory, made and written to now: a mistake there would
    otherwise show only as surveys retrying."""
    if settings.email.backend != "file":
        return None
    directory = settings.email.file_dir
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        return f"email.file_dir: cannot write .eml files to {directory}: {exc.strerror or exc}"
    return None


def _cannot_start(reason: str) -> int:
    log.error("server.start_failed", reason=reason)
    print(f"npsd: cannot start: {reason}", file=sys.stderr)
    return 1


async def serve(settings: Settings, config_path: Path | None) -> int:
    # Off loopback the CLI has already refused these; on loopback they are only a warning.
    for weak in weak_secrets(settings):
        log.warning("config.weak_secret", key=weak.key, reason=weak.reason, origin=weak.origin)
    _warn_plain_http(settings)
    if (problem := _outbox_problem(settings)) is not None:
        return _cannot_start(problem)
    try:
        app = create_app(settings, config_path=config_path)
    except StoreUnavailable as exc:  # the database's directory cannot be made
        return _cannot_start(str(exc))
    runtime = app[RUNTIME]
    grace = settings.server.shutdown_timeout.total_seconds()
    runner = web.AppRunner(app, handle_signals=False,
                           **server_options(runtime.metrics, settings.server))
    try:
        await runner.setup()
    except (SchemaTooNew, StoreUnavailable) as exc:
        code = _cannot_start(str(exc))
        await runner.cleanup()
        return code
    site = web.TCPSite(runner, settings.server.host, settings.server.port,
                       shutdown_timeout=grace, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        log.error("server.listen_failed", host=settings.server.host,
                  port=settings.server.port, reason=str(exc))
        await runner.cleanup()
        return 1
    _tune_gc()
    log.info("server.started", host=settings.server.host, port=settings.server.port,
             storage=runtime.store.dialect, database=describe_store(settings.storage.url),
             email_backend=settings.email.backend,
             outbox=str(settings.email.file_dir) if settings.email.backend == "file" else None,
             sync="on" if settings.segment.enabled else "off")
    systemd.notify(systemd.READY, systemd.status("listening"))
    stop = runtime.stop_requested
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: reload(app))
    await stop.wait()
    log.info("server.stopping", grace_s=grace)
    runtime.stopping = True
    systemd.notify(systemd.STOPPING)
    await runner.cleanup()
    await _settle_leftover_tasks(timeout_s=5.0)
    log.info("server.stopped")
    return 1 if runtime.died else 0


def _tune_gc() -> None:
    """The intake allocates a few dicts per event and keeps few: with CPython's default
    thresholds the cyclic collector ran every 700 allocations and, often enough, walked the
    whole heap (measured: 100-message batches 25,491 → 29,248 events/s with these settings).
    What exists once the server is up (modules, the app) is frozen out of collection."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


async def _settle_leftover_tasks(timeout_s: float) -> None:
    """Cancel what is still running after the cleanup contexts closed. A task that ignores
    cancellation must not keep a stopped npsd alive: exit anyway (the store is closed)."""
    current = asyncio.current_task()
    others = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    for task in others:
        task.cancel()
    if not others:
        return
    _, pending = await asyncio.wait(others, timeout=timeout_s)
    if pending:
        log.error("server.stuck_tasks", tasks=[t.get_name() for t in pending])
        sys.stderr.flush()
        os._exit(0)


_background: set[asyncio.Task[None]] = set()


async def _close_when_idle(app: web.Application, backend: EmailBackend) -> None:
    """Close the old email backend only after sends already under way on it have finished."""
    if DISPATCHER in app:
        await app[DISPATCHER].idle()
    await backend.close()


def _warn_plain_http(settings: Settings) -> None:
    for key, host in plain_http_receivers(settings.alerts, settings.webhooks):
        log.warning("config.plain_http_receiver", key=key, host=host,
                    reason="bodies hold comments and emails: use https")


def reload(app: web.Application) -> None:
    runtime = app[RUNTIME]
    systemd.notify(systemd.RELOADING)
    try:
        try:
            new = load_settings(runtime.config_path or Path("config.toml"))
        except ConfigError as exc:
            log.error("config.reload_failed", reason=str(exc))
            return
        old = runtime.settings
        weak = weak_secrets(new)
        if weak and not is_loopback(old.server.host):
            # The listening address stays until a restart: judge the new secrets by it.
            log.error("config.reload_failed", reason="; ".join(w.message() for w in weak))
            return
        for w in weak:
            log.warning("config.weak_secret", key=w.key, reason=w.reason, origin=w.origin)
        _warn_plain_http(new)
        if new.storage != old.storage:
            log.warning("config.restart_needed", key="storage.url")
            new = replace(new, storage=old.storage)
        if (new.server.host, new.server.port) != (old.server.host, old.server.port):
            log.warning("config.restart_needed", key="server.host/server.port")
        if new.server.keepalive_timeout != old.server.keepalive_timeout:
            log.warning("config.restart_needed", key="server.keepalive_timeout")
        runtime.settings = new
        configure_logging(new.log.format, new.log.level, new.secrets())
        if new.email != old.email and EMAIL in app:
            previous = app[EMAIL]
            app[EMAIL] = make_backend(new.email, runtime.clock)
            task = asyncio.get_running_loop().create_task(_close_when_idle(app, previous))
            _background.add(task)
            task.add_done_callback(_background.discard)
        if new.segment != old.segment and SCHEDULE in app:
            app[SCHEDULE].reschedule_sync()
        log.info("config.reloaded", path=str(runtime.config_path))
    finally:
        systemd.notify(systemd.READY, systemd.status("listening"))
