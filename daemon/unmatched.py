"""The answer to a path or a method no route takes: JSON with a `message` (a page under
/console), as every other refusal, instead of aiohttp's plain-text 404 and 405.

A catch-all route registered after all others: the router only reaches it when nothing else
matched, so a matched request pays nothing. It learns which methods the path does take by
asking the other resources (only on this error path)."""

from __future__ import annotations

from aiohttp import web
from aiohttp.web_urldispatcher import AbstractResource

from daemon.console.render import html, page
from daemon.http_util import json_error
from daemon.request_counts import UNMATCHED as NAME  # its label in /metrics too


def add_route(app: web.Application) -> None:
    """Register last."""
    app.router.add_route("*", "/{tail:.*}", unmatched, name=NAME)


def _matches(resource: AbstractResource, path: str) -> bool:
    info = resource.get_info()
    if "path" in info:
        return bool(info["path"] == path)
    pattern = info.get("pattern")
    return pattern is not None and pattern.fullmatch(path) is not None


def allowed_methods(app: web.Application, path: str) -> set[str]:
    methods: set[str] = set()
    for resource in app.router.resources():
        if resource.name != NAME and _matches(resource, path):
            methods.update(route.method for route in resource)
    return methods


async def unmatched(request: web.Request) -> web.Response:
    allowed = allowed_methods(request.app, request.path)
    if allowed:
        status, headers = 405, {"Allow": ", ".join(sorted(allowed))}
        message = f"{request.method} is not allowed on {request.path[:200]}: use " \
                  f"{headers['Allow']}"
    else:
        status, headers, message = 404, {}, f"no such path: {request.path[:200]}"
    if request.path.startswith("/console"):
        response = html(page("console_error.html", title="Not found" if status == 404 else
                             "Not allowed", status=status, detail=message), status)
    else:
        response = json_error(status, message)
    response.headers.update(headers)
    if not request.content.is_eof():
        response.force_close()  # the body is not read
    return response
