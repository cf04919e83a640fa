"""The options of npsd's HTTP server (one set for `npsd run` and the tests), and counting
HTTP requests by route and status for /metrics.

aiohttp calls its access logger once per answered request, whatever answered it (a handler,
an HTTP exception, a 404 from the router, a 500). Counting there instead of in a middleware
keeps the middleware chain off every request: measured, the middleware and the wrapper
aiohttp adds with it cost ~9 µs of a ~125 µs single-message intake request."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, Request, StreamResponse

from daemon.config import ServerSettings
from daemon.metrics import Metrics

UNMATCHED = "unmatched"


def route_name(request: BaseRequest) -> str:
    """The route's path template (`/v1/users/{user_id}`), so ids do not explode the labels.
    A request answered before routing (a malformed request: aiohttp's own 400) has no match
    info, and Request.match_info asserts that it has: read the attribute behind it."""
    match_info = getattr(request, "_match_info", None) if isinstance(request, Request) else None
    resource = match_info.route.resource if match_info is not None else None
    if resource is None or resource.name == UNMATCHED:  # daemon/unmatched.py's catch-all
        return UNMATCHED
    return str(resource.canonical)


def server_options(metrics: Metrics, server: ServerSettings | None = None) -> dict[str, Any]:
    """The keyword arguments for aiohttp's AppRunner (or TestServer): how the server treats
    connections and bodies, and the access logger that counts requests."""
    server = server or ServerSettings()

    class RequestCounter(AbstractAccessLogger):
        def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
            metrics.count_request(route_name(request), response.status)

    return {
        # aiohttp only calls the class when it is given a logger; nothing is written to it.
        "access_log_class": RequestCounter, "access_log": logging.getLogger("npsd.http"),
        # Bodies are inflated by the handler that takes one, after routing and credentials,
        # within that route's limit and in slices (daemon/bodies.py); aiohttp's parser
        # would inflate every gzip body in full, before any handler ran.
        "auto_decompress": False,
        # A body the handler left unread is not drained (aiohttp reads it for up to 10 s by
        # default): the connection is closed instead.
        "lingering_time": 0,
        # Idle connections, and a request whose headers do not arrive, close after this
        # (aiohttp's default is 3630 s).
        "keepalive_timeout": server.keepalive_timeout.total_seconds(),
    }
