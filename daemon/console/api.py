"""GET /v1/responses: the console's responses as JSON, the same filters, `limit` ≤ 500 and
a keyset `cursor`; the admin token or a viewer token."""

from __future__ import annotations

from aiohttp import web

from daemon.admin_api import reader
from daemon.console.filters import FilterError, parse_filters, parse_limit
from daemon.http_util import json_error
from daemon.runtime import RUNTIME
from storage.console_reads import BadCursor


@reader
async def get_responses(request: web.Request) -> web.StreamResponse:
    try:
        filters = parse_filters(request.query)
        limit = parse_limit(request.query, 100)
        rows, cursor = await request.app[RUNTIME].store.responses(
            filters, limit, request.query.get("cursor") or None)
    except (FilterError, BadCursor) as exc:
        return json_error(400, str(exc))
    return web.json_response({"responses": rows, "next_cursor": cursor})
