"""Console login, sessions and CSRF.

A login with the admin token or a `console.viewer_tokens` entry (compared in constant time)
creates a session row (storage/console_sessions.py) and sets `npsd_session`: HttpOnly,
SameSite=Strict, Secure when public_url is https, for `console.session_ttl`. The session
remembers the SHA-256 of the token, and its role is looked up again on every request, so a
token taken out of the config (and a reload) ends its sessions. Every POST carries the
session's CSRF token (the login form a token of its own, double-submitted in a cookie).
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import parse_qsl, urlencode

import structlog
from aiohttp import web

from daemon.auth import presented, token_role
from daemon.bodies import read_body
from daemon.config import Settings
from daemon.console.login_limit import LOGIN_LIMITER, Refused
from daemon.console.render import html, page
from daemon.http_util import BodyError
from daemon.runtime import RUNTIME
from daemon.survey_page import PAGE_BODY_LIMIT
from storage.console_sessions import digest
from storage.db import StoreUnavailable

log = structlog.get_logger("npsd.console")

COOKIE = "npsd_session"
LOGIN_COOKIE = "npsd_login_csrf"
MAX_TOKEN = 512


@dataclass(frozen=True)
class Viewer:
    """Who is looking: their role and the CSRF token their forms carry."""

    role: str
    csrf: str

    @property
    def admin(self) -> bool:
        return self.role == "admin"


Handler = Callable[[web.Request, Viewer], Awaitable[web.StreamResponse]]


class BadForm(Exception):
    """A body that is not a form this console sent."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


MAX_FIELDS = 100  # the console's forms have a handful


async def read_form(request: web.Request) -> dict[str, str]:
    """The urlencoded form's fields, read within server.body_timeout and PAGE_BODY_LIMIT
    (a sign-in form that trickles in must not hold its connection); anything else
    (multipart, too large, too slow) is BadForm."""
    if request.content_type not in ("application/x-www-form-urlencoded", ""):
        raise BadForm("send the form as application/x-www-form-urlencoded")
    timeout = request.app[RUNTIME].settings.server.body_timeout.total_seconds()
    try:
        body = await read_body(request, PAGE_BODY_LIMIT, timeout)
    except BodyError as exc:
        raise BadForm(exc.message, exc.status) from None
    try:
        pairs = parse_qsl(body.decode("ascii", "replace"), keep_blank_values=True,
                          encoding="utf-8", errors="replace", max_num_fields=MAX_FIELDS)
    except ValueError:
        raise BadForm("the form has too many fields") from None
    return dict(pairs)


def _bad_form(exc: BadForm) -> web.Response:
    response = html(page("console_error.html", title="Bad form", status=exc.status,
                         detail=str(exc)), exc.status)
    if exc.status in (408, 413):
        response.force_close()  # the rest of the body is not read
    return response


def _secure(settings: Settings) -> bool:
    return settings.server.public_url.lower().startswith("https://")


def _role_of_hash(settings: Settings, token_hash: str) -> str | None:
    given = token_hash.encode()
    is_admin = hmac.compare_digest(given, digest(settings.admin.token).encode())
    is_viewer = False
    for token in settings.console.viewer_tokens:
        is_viewer |= hmac.compare_digest(given, digest(token).encode())
    return "admin" if is_admin else "viewer" if is_viewer else None


async def current(request: web.Request) -> Viewer | None:
    session_id = request.cookies.get(COOKIE)
    if not session_id or len(session_id) > 128:
        return None
    runtime = request.app[RUNTIME]
    found = await runtime.store.find_session(session_id, runtime.clock.now())
    if found is None:
        return None
    role = _role_of_hash(runtime.settings, found.token_hash)
    return None if role is None else Viewer(role, found.csrf)


def to_login(request: web.Request) -> web.Response:
    target = request.path_qs if request.method == "GET" else "/console"
    raise web.HTTPSeeOther("/console/login?" + urlencode({"next": target}))


def console_page(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A console route: without a session → 303 to the login; a POST without the session's
    CSRF token → 403; a store outage → a 503 page."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            viewer = await current(request)
            if viewer is None:
                return to_login(request)
            if request.method == "POST":
                try:
                    form = await read_form(request)
                except BadForm as exc:
                    return _bad_form(exc)
                given = form.get("csrf", "")
                if not hmac.compare_digest(presented(given), viewer.csrf.encode()):
                    return html(page("console_error.html", title="Form expired", status=403,
                                     detail="This form is out of date: go back, reload the "
                                            "page and try again."), 403)
            return await handler(request, viewer)
        except StoreUnavailable:
            return html(page("console_error.html", title="Store unavailable", status=503,
                             detail="The database is not answering; retry in a moment."), 503)

    return wrapped


def _safe_next(value: str | None) -> str:
    """Only a console path: never an open redirect to another site."""
    if value and value.startswith("/console") and "//" not in value and "\\" not in value:
        return value
    return "/console"


async def login_form(request: web.Request) -> web.StreamResponse:
    if await current(request) is not None:
        raise web.HTTPSeeOther(_safe_next(request.query.get("next")))
    return _login_page(request, error=None, status=200)


def _login_page(request: web.Request, error: str | None, status: int) -> web.Response:
    token = secrets.token_urlsafe(24)
    response = html(page("console_login.html", title="Sign in", error=error, csrf=token,
                         next=_safe_next(request.query.get("next"))), status)
    response.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="Strict",
                        secure=_secure(request.app[RUNTIME].settings), path="/console")
    return response


async def login(request: web.Request) -> web.StreamResponse:
    runtime = request.app[RUNTIME]
    try:
        form = await read_form(request)
    except BadForm as exc:
        return _bad_form(exc)
    given = form.get("csrf", "")
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not hmac.compare_digest(presented(given), expected.encode()):
        return _login_page(request, "The sign-in form expired: please try again.", 403)
    limiter, remote = request.app[LOGIN_LIMITER], request.remote or ""
    refused = limiter.check(remote, runtime.clock.now())
    if refused is not None:
        return _limited(request, refused)
    token = str(form.get("token", "")).strip()[:MAX_TOKEN]
    settings = runtime.settings
    role = token_role(token, settings.admin.token, settings.console.viewer_tokens) \
        if token else None
    if role is None:
        if token:
            limiter.failed(remote, runtime.clock.now())
        log.warning("console.login_refused", reason="wrong_token" if token else "no_token")
        return _login_page(request, "That token is not valid. Ask your npsd operator for a "
                                    "viewer token.", 401)
    now = runtime.clock.now()
    session_id, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
    ttl = settings.console.session_ttl
    try:
        await runtime.store.create_session(session_id, digest(token), csrf, now, now + ttl)
    except StoreUnavailable:
        return html(page("console_error.html", title="Store unavailable", status=503,
                         detail="The database is not answering; retry in a moment."), 503)
    log.info("console.login", role=role)
    response = web.HTTPSeeOther(_safe_next(str(form.get("next", "")) or None))
    response.set_cookie(COOKIE, session_id, httponly=True, samesite="Strict",
                        secure=_secure(settings), path="/", max_age=int(ttl.total_seconds()))
    response.del_cookie(LOGIN_COOKIE, path="/console")
    raise response


def _limited(request: web.Request, refused: Refused) -> web.Response:
    """429: too many sign-in attempts (from this address, or from everyone)."""
    log.warning("console.login_limited", scope=refused.scope, remote=request.remote or "",
                retry_after_s=refused.seconds)
    at = request.app[RUNTIME].clock.now() + timedelta(seconds=refused.seconds)
    source = "from this address" if refused.scope == "address" else "to this console"
    response = html(page(
        "console_error.html", title="Too many sign-in attempts", status=429,
        detail=f"There were too many sign-in attempts {source}. Try again in "
               f"{refused.seconds} seconds (after {at:%H:%M:%S} UTC)."), 429)
    response.headers["Retry-After"] = str(refused.seconds)
    return response


@console_page
async def logout(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    runtime = request.app[RUNTIME]
    await runtime.store.delete_session(request.cookies.get(COOKIE, ""))
    log.info("console.logout", role=viewer.role)
    response = web.HTTPSeeOther("/console/login")
    response.del_cookie(COOKIE, path="/")
    raise response
