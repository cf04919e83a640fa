"""The console's dashboard (with the admin's sync button), the responses list and its CSV
export."""

from __future__ import annotations

import csv
import io
from typing import Any
from urllib.parse import urlencode

import structlog
from aiohttp import web

from daemon.console.filters import FilterError, parse_filters
from daemon.console.render import chart, html, page
from daemon.console.session import Viewer, console_page
from daemon.runtime import RUNTIME
from storage.console_reads import BadCursor, Filters
from storage.timeparse import iso

log = structlog.get_logger("npsd.console")

CSV_HEADER = ("answered_at", "user_id", "email", "name", "accounts", "score", "category",
              "comment")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
PAGE_SIZE = 50
FILTER_KEYS = ("category", "score_min", "score_max", "account", "since", "until", "q")


@console_page
async def dashboard(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    runtime = request.app[RUNTIME]
    by = "month" if request.query.get("by") == "month" else "week"
    computed_at = runtime.clock.now()
    figures = await runtime.store.dashboard(computed_at, by)
    synced = request.query.get("synced")
    notice = {"ok": "Sync finished.", "busy": "A sync is already running.",
              "off": "Sync-back is off: set segment.write_key.",
              "failed": "The sync did not finish: see the log."}.get(synced or "")
    return html(page("console_dashboard.html", title="Dashboard", viewer=viewer,
                     nav="dashboard", f=figures, chart=chart(figures["trend"]), by=by,
                     notice=notice, computed_at=iso(computed_at)))


@console_page
async def sync(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    """The dashboard's "Sync now" (admin only: a viewer reads)."""
    if not viewer.admin:
        log.warning("console.sync_refused", role=viewer.role)
        return html(page("console_error.html", title="Not allowed", status=403, viewer=viewer,
                         detail="Only the admin token may start a sync; a viewer token "
                                "reads."), 403)
    from jobs.sync import SYNCER

    syncer = request.app.get(SYNCER)
    if syncer is None or not request.app[RUNTIME].settings.segment.enabled:
        raise web.HTTPSeeOther("/console?synced=off")
    log.info("console.sync_started")
    report = await syncer.run("console")
    result = str(report.get("result"))
    raise web.HTTPSeeOther("/console?synced=" + (result if result in ("ok", "busy")
                                                 else "failed"))


def _bad_filter(viewer: Viewer, query: dict[str, str], message: str) -> web.Response:
    return html(page("console_responses.html", title="Responses", viewer=viewer,
                     nav="responses", rows=[], query=query, error=message, next_url=None,
                     csv_url=None, first_url=None), 400)


def _query(request: web.Request) -> dict[str, str]:
    return {k: request.query.get(k, "") for k in FILTER_KEYS}


def _link(path: str, query: dict[str, str], **more: str) -> str:
    kept = {k: v for k, v in {**query, **more}.items() if v}
    return path + ("?" + urlencode(kept) if kept else "")


@console_page
async def responses(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    query = _query(request)
    try:
        filters = parse_filters(request.query)
        rows, cursor = await request.app[RUNTIME].store.responses(
            filters, PAGE_SIZE, request.query.get("cursor") or None)
    except (FilterError, BadCursor) as exc:
        return _bad_filter(viewer, query, str(exc))
    return html(page(
        "console_responses.html", title="Responses", viewer=viewer, nav="responses",
        rows=rows, query=query, error=None,
        next_url=_link("/console/responses", query, cursor=cursor) if cursor else None,
        first_url=_link("/console/responses", query) if request.query.get("cursor") else None,
        csv_url=_link("/console/responses.csv", query)))


def neutralise(value: Any) -> str:
    """A spreadsheet runs a cell that starts with = + - @ as a formula: make it text."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _csv_rows(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    for r in rows:
        writer.writerow([neutralise(v) for v in (
            r["answered_at"], r["user_id"], r["email"], r["name"], ";".join(r["accounts"]),
            r["score"], r["category"], r["comment"])])
    return out.getvalue()


@console_page
async def responses_csv(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    try:
        filters = parse_filters(request.query)
    except FilterError as exc:
        return _bad_filter(viewer, _query(request), str(exc))
    return await stream_csv(request, filters)


async def stream_csv(request: web.Request, filters: Filters) -> web.StreamResponse:
    """Every matching answer, read 500 at a time by cursor and written as it is read."""
    store = request.app[RUNTIME].store
    response = web.StreamResponse(headers={
        "Content-Type": "text/csv; charset=utf-8", "Cache-Control": "no-store",
        "Content-Disposition": 'attachment; filename="npsd-responses.csv"',
        "X-Content-Type-Options": "nosniff"})
    rows, cursor = await store.responses(filters, 500)
    await response.prepare(request)
    await response.write((",".join(CSV_HEADER) + "\r\n").encode("utf-8"))
    while True:
        await response.write(_csv_rows(rows).encode("utf-8"))
        if cursor is None:
            break
        rows, cursor = await store.responses(filters, 500, cursor)
    await response.write_eof()
    log.info("console.exported")
    return response
