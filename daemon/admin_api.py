"""The read API and admin actions, behind `Authorization: Bearer <admin.token>`; the reads
also take a console viewer token (`reader`), the actions only the admin token (`admin`)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from daemon.auth import AuthError, bearer_role, check_admin
from daemon.http_util import json_error
from daemon.runtime import RUNTIME
from storage.db import StoreUnavailable
from storage.events import MAX_ID_LENGTH
from storage.sql_store import SqlStore

log = structlog.get_logger("npsd.admin")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# No stored id holds these (the intake turns NUL and lone surrogates into U+FFFD and caps
# ids at MAX_ID_LENGTH), and PostgreSQL refuses NUL in a query: such an id is unknown.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _known_id(value: str) -> bool:
    return len(value) <= MAX_ID_LENGTH and not _UNSTORABLE.search(value)


def admin(handler: Handler, *, viewers: bool = False) -> Handler:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        settings = request.app[RUNTIME].settings
        try:
            if viewers:
                bearer_role(request, settings.admin.token, settings.console.viewer_tokens)
            else:
                check_admin(request, settings.admin.token)
        except AuthError as exc:
            return json_error(401, str(exc))
        if not all(_known_id(v) for v in request.match_info.values()):
            return json_error(404, "no such user or account")
        try:
            return await handler(request)
        except StoreUnavailable:
            return json_error(503, "the store is unavailable; retry later")

    return wrapped


def reader(handler: Handler) -> Handler:
    """A read: the admin token or a console viewer token."""
    return admin(handler, viewers=True)


@reader
async def get_user(request: web.Request) -> web.StreamResponse:
    user = await request.app[RUNTIME].store.user(request.match_info["user_id"])
    if user is None:
        return json_error(404, "no such user")
    return web.json_response(user)


@admin
async def delete_user(request: web.Request) -> web.StreamResponse:
    """Erasure for a request that does not come through Segment: the very path of a Segment
    `delete` (a deletion message committed by the intake writer), so both leave the same."""
    runtime = request.app[RUNTIME]
    user_id = request.match_info["user_id"]
    if not await runtime.store.user_exists(user_id):
        return json_error(404, "no such user")
    await runtime.store.erase(user_id, runtime.intake_policy())
    log.info("admin.user_erased")  # no id: the person is gone
    return web.Response(status=204)


@reader
async def get_decisions(request: web.Request) -> web.StreamResponse:
    found = await request.app[RUNTIME].store.decisions(request.match_info["user_id"])
    if found is None:
        return json_error(404, "no such user")
    return web.json_response({"userId": request.match_info["user_id"], "decisions": found})


@reader
async def get_account(request: web.Request) -> web.StreamResponse:
    account = await request.app[RUNTIME].store.account(request.match_info["group_id"])
    if account is None:
        return json_error(404, "no such account")
    return web.json_response(account)


@reader
async def get_nps(request: web.Request) -> web.StreamResponse:
    by = request.query.get("by")
    if by not in (None, "account", "month"):
        return json_error(400, "by must be account or month")
    return web.json_response(await named_report(request.app[RUNTIME].store, by))


async def named_report(store: SqlStore, by: str | None) -> dict[str, Any]:
    """The NPS report; by account, each group also carries the account's stored name."""
    report = await store.nps(by)
    if by == "account":
        names = await store.account_names([g["key"] for g in report["groups"]])
        report["groups"] = [{"key": g["key"], "name": names.get(g["key"]),
                             **{k: v for k, v in g.items() if k != "key"}}
                            for g in report["groups"]]
    return report


@reader
async def get_status(request: web.Request) -> web.StreamResponse:
    runtime = request.app[RUNTIME]
    return web.json_response(await runtime.store.status(runtime.clock.now()))


@admin
async def post_sync(request: web.Request) -> web.StreamResponse:
    from jobs.sync import SYNCER  # the syncer lives with the scheduler's cleanup context

    syncer = request.app.get(SYNCER)
    if syncer is None or not request.app[RUNTIME].settings.segment.enabled:
        return json_error(409, "sync-back is off: set segment.write_key")
    report = await syncer.run("api")
    return web.json_response(report, status=200 if report.get("result") != "busy" else 409)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/users/{user_id}", get_user)
    app.router.add_delete("/v1/users/{user_id}", delete_user)
    app.router.add_get("/v1/users/{user_id}/decisions", get_decisions)
    app.router.add_get("/v1/accounts/{group_id}", get_account)
    app.router.add_get("/v1/nps", get_nps)
    app.router.add_get("/v1/status", get_status)
    app.router.add_post("/v1/sync", post_sync)
