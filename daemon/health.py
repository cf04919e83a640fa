"""/healthz (the process answers), /readyz (store reachable and migrated), /metrics."""

from __future__ import annotations

from importlib import resources

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from daemon.runtime import RUNTIME
from storage.db import StoreUnavailable
from storage.migrations import LATEST


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    if runtime.stopping:
        return web.json_response({"status": "stopping"}, status=503)
    try:
        version = await runtime.store.schema_version()
    except (StoreUnavailable, OSError) as exc:
        return web.json_response({"status": "store unreachable", "reason": str(exc)},
                                 status=503)
    if version != LATEST:
        return web.json_response({"status": "schema not current", "version": version},
                                 status=503)
    return web.json_response({"status": "ready", "schema": version})


async def metrics(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    try:
        status = await runtime.store.status(runtime.clock.now())
    except StoreUnavailable:
        status = None
    if status is not None:
        for state, count in status["surveys"].items():
            runtime.metrics.surveys.labels(state).set(count)
        runtime.metrics.backlog.set(status["due_now"])
        runtime.metrics.oldest_due.set(status["oldest_due_seconds"])
        for state in ("pending", "dead"):
            runtime.metrics.deliveries_by_state.labels(state).set(status["deliveries"][state])
    runtime.metrics.flush()
    body = generate_latest(runtime.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    text = resources.files("daemon").joinpath("openapi.yaml").read_text(encoding="utf-8")
    return web.Response(text=text, content_type="application/yaml")


async def favicon(_request: web.Request) -> web.Response:
    """Browsers ask for it on every first visit: no icon, and no 404 in their console."""
    return web.Response(status=204, headers={"Cache-Control": "public, max-age=86400"})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/favicon.ico", favicon)
    app.router.add_get("/v1/openapi.yaml", openapi)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
