"""The console's customer book: accounts (sortable) and an account's page, customer search
and a customer's page (traits, accounts, activity, surveys, the decision log as a timeline),
and the send-queue preview."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from daemon.console.render import html, page
from daemon.console.session import Viewer, console_page
from daemon.runtime import RUNTIME
from storage.console_book import ACCOUNT_SORTS
from storage.console_reads import Filters
from storage.events import MAX_ID_LENGTH
from storage.nps_totals import account_name
from storage.timeparse import iso

ACCOUNTS_PER_PAGE = 100


def _not_found(viewer: Viewer, what: str) -> web.Response:
    return html(page("console_error.html", title=f"No such {what}", status=404, viewer=viewer,
                     detail=f"This {what} is not in the book (it may have been erased)."), 404)


@console_page
async def accounts(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    sort = request.query.get("sort", "name")
    if sort not in ACCOUNT_SORTS:
        sort = "name"
    descending = request.query.get("order", "desc" if sort != "name" else "asc") == "desc"
    page_no = request.query.get("page", "1")
    number = int(page_no) if page_no.isascii() and page_no.isdigit() and len(page_no) < 7 \
        and int(page_no) > 0 else 1
    runtime = request.app[RUNTIME]
    computed_at = runtime.clock.now()
    rows, total = await runtime.store.accounts_page(sort, descending, ACCOUNTS_PER_PAGE,
                                                    (number - 1) * ACCOUNTS_PER_PAGE)

    def link(**q: Any) -> str:
        return "/console/accounts?" + urlencode(q)

    def order(s: str) -> str:  # the current column toggles; another starts at its default
        if s == sort:
            return "asc" if descending else "desc"
        return "asc" if s == "name" else "desc"

    sorts = {s: link(sort=s, order=order(s)) for s in ACCOUNT_SORTS}
    more = number * ACCOUNTS_PER_PAGE < total
    return html(page("console_accounts.html", title="Accounts", viewer=viewer, nav="accounts",
                     rows=rows, total=total, sort=sort, computed_at=iso(computed_at),
                     descending=descending, sorts=sorts,
                     next_url=link(sort=sort, order="desc" if descending else "asc",
                                   page=number + 1) if more else None,
                     prev_url=link(sort=sort, order="desc" if descending else "asc",
                                   page=number - 1) if number > 1 else None))


@console_page
async def account(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    group_id = request.match_info["group_id"]
    store = request.app[RUNTIME].store
    found = await store.account(group_id) if len(group_id) <= MAX_ID_LENGTH else None
    if found is None:
        return _not_found(viewer, "account")
    recent, _ = await store.responses(Filters(account=group_id), 20)
    return html(page("console_account.html", title=_account_title(found), viewer=viewer,
                     nav="accounts", a=found, account_name=account_name(
                         json.dumps(found["traits"])), members=await store.account_members(
                         group_id), recent=recent,
                     traits=json.dumps(found["traits"], indent=2, ensure_ascii=False)))


def _account_title(found: dict[str, Any]) -> str:
    name = found["traits"].get("name")
    return str(name) if isinstance(name, str) and name else str(found["groupId"])


@console_page
async def users(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    q = request.query.get("q", "").strip()[:200].replace("\x00", "")
    rows = await request.app[RUNTIME].store.search_users(q) if q else []
    if len(rows) == 1 and rows[0]["user_id"] == q:
        raise web.HTTPSeeOther(f"/console/users/{_quote(q)}")
    return html(page("console_users.html", title="Customers", viewer=viewer, nav="users",
                     q=q, rows=rows))


def _quote(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


@console_page
async def user(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    user_id = request.match_info["user_id"]
    store = request.app[RUNTIME].store
    found = await store.user(user_id) if len(user_id) <= MAX_ID_LENGTH else None
    if found is None:
        return _not_found(viewer, "customer")
    timeline = await store.decisions(found["userId"]) or []
    names = await store.account_names([a["groupId"] for a in found["accounts"]])
    return html(page("console_user.html", title=found["name"] or found["email"] or
                     found["userId"], viewer=viewer, nav="users", u=found,
                     timeline=list(reversed(timeline)), names=names,
                     traits=json.dumps(found["traits"], indent=2, ensure_ascii=False)))


@console_page
async def queue(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    runtime = request.app[RUNTIME]
    found = await runtime.store.send_queue(runtime.clock.now())
    return html(page("console_queue.html", title="Send queue", viewer=viewer, nav="queue",
                     q=found))
