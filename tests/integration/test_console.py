"""The console on both backends: login, session, logout and CSRF; the viewer/admin split on
every route; the responses filters, CSV (parsed, formula cells neutralised) and
GET /v1/responses cursor paging; a `<script>` comment always rendered as text."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from daemon.runtime import RUNTIME
from tests.conftest import ADMIN, bearer
from tests.console_seed import FORMULA_COMMENT, SCRIPT_COMMENT, VIEWER, csrf_of, seed_book

PAGES = ["/console", "/console/responses", "/console/responses.csv", "/console/accounts",
         "/console/accounts/acc-1", "/console/users?q=ann", "/console/users/u1",
         "/console/queue"]
READS = ["/v1/users/u1", "/v1/users/u1/decisions", "/v1/accounts/acc-1", "/v1/nps",
         "/v1/nps?by=account", "/v1/status", "/v1/responses"]


async def start(make_client: Any, **console: Any) -> TestClient[Any, Any]:
    client: TestClient[Any, Any] = await make_client(
        console={"viewer_tokens": [VIEWER], **console})
    runtime = client.server.app[RUNTIME]
    await seed_book(runtime.store.db, runtime.clock.now())
    return client


async def login(client: TestClient[Any, Any], token: str) -> str:
    """Signs in; returns the session's CSRF token (from the dashboard's logout form)."""
    form = await client.get("/console/login")
    response = await client.post("/console/login", data={
        "token": token, "csrf": csrf_of(await form.text()), "next": "/console"},
        allow_redirects=False)
    assert response.status == 303, await response.text()
    assert response.headers["Location"] == "/console"
    cookie = response.headers["Set-Cookie"]
    assert "npsd_session=" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Secure" not in cookie  # public_url is http here
    page = await client.get("/console")
    assert page.status == 200
    return csrf_of(await page.text())


async def test_every_page_without_a_session_redirects_to_the_login(make_client: Any) -> None:
    client = await start(make_client)
    for path in PAGES:
        response = await client.get(path, allow_redirects=False)
        assert response.status == 303, path
        assert response.headers["Location"].startswith("/console/login?next="), path
    for path in ("/console/sync", "/console/logout"):
        response = await client.post(path, data={}, allow_redirects=False)
        assert response.status == 303 and "/console/login" in response.headers["Location"]
    login_page = await client.get("/console/login")
    assert "default-src 'self'" in login_page.headers["Content-Security-Policy"]


async def test_a_wrong_token_or_a_missing_login_csrf_is_refused(make_client: Any) -> None:
    client = await start(make_client)
    form = await client.get("/console/login")
    csrf = csrf_of(await form.text())
    wrong = await client.post("/console/login", data={"token": "nope", "csrf": csrf},
                              allow_redirects=False)
    assert wrong.status == 401 and "not valid" in await wrong.text()
    client.session.cookie_jar.clear()
    forged = await client.post("/console/login", data={"token": ADMIN, "csrf": csrf},
                               allow_redirects=False)
    assert forged.status == 403
    assert (await client.get("/console", allow_redirects=False)).status == 303



async def test_wrong_tokens_are_rate_limited_per_address(make_client: Any) -> None:
    client = await start(make_client)
    clock = client.server.app[RUNTIME].clock

    async def attempt(token: str) -> Any:
        form = await client.get("/console/login")
        return await client.post("/console/login", data={
            "token": token, "csrf": csrf_of(await form.text())}, allow_redirects=False)

    with capture_logs() as logs:
        for n in range(10):
            assert (await attempt(f"guess-{n}")).status == 401
        refused = await attempt("guess-10")
        text = await refused.text()
        assert refused.status == 429 and "Too many sign-in attempts" in text
        assert "Try again in 30 seconds" in text and refused.headers["Retry-After"] == "30"
        # While refused, even the right token is not compared.
        assert (await attempt(ADMIN)).status == 429
    limited = [e for e in logs if e["event"] == "console.login_limited"]
    assert len(limited) == 2 and limited[0]["scope"] == "address"
    assert all("guess" not in str(e) and ADMIN not in str(e) for e in logs)
    clock.advance(timedelta(seconds=30))  # one attempt back
    assert (await attempt(ADMIN)).status == 303
    client.session.cookie_jar.clear()
    assert (await attempt("guess-11")).status == 401
    assert (await attempt("guess-12")).status == 429

async def test_viewer_reads_every_page_but_cannot_sync(make_client: Any) -> None:
    client = await start(make_client)
    csrf = await login(client, VIEWER)
    for path in PAGES:
        response = await client.get(path, allow_redirects=False)
        assert response.status == 200, path
    dashboard = await (await client.get("/console")).text()
    assert 'action="/console/sync"' not in dashboard  # no button for a viewer
    refused = await client.post("/console/sync", data={"csrf": csrf}, allow_redirects=False)
    assert refused.status == 403 and "Only the admin token" in await refused.text()


async def test_admin_sync_needs_the_csrf_token(make_client: Any) -> None:
    client = await start(make_client)
    csrf = await login(client, ADMIN)
    assert 'action="/console/sync"' in await (await client.get("/console")).text()
    forged = await client.post("/console/sync", data={"csrf": "guess"}, allow_redirects=False)
    assert forged.status == 403
    done = await client.post("/console/sync", data={"csrf": csrf}, allow_redirects=False)
    assert done.status == 303 and done.headers["Location"] == "/console?synced=off"


async def test_logout_ends_the_session_and_needs_csrf(make_client: Any) -> None:
    client = await start(make_client)
    csrf = await login(client, VIEWER)
    cookie = client.session.cookie_jar.filter_cookies(client.make_url("/"))["npsd_session"]
    refused = await client.post("/console/logout", data={"csrf": "x"}, allow_redirects=False)
    assert refused.status == 403
    out = await client.post("/console/logout", data={"csrf": csrf}, allow_redirects=False)
    assert out.status == 303 and out.headers["Location"] == "/console/login"
    # The old cookie, replayed, is dead: the session row is gone.
    client.session.cookie_jar.update_cookies({"npsd_session": cookie.value})
    assert (await client.get("/console", allow_redirects=False)).status == 303

async def test_a_token_taken_out_of_the_config_ends_its_sessions(make_client: Any) -> None:
    from dataclasses import replace

    client = await start(make_client)
    await login(client, VIEWER)
    runtime = client.server.app[RUNTIME]
    s = runtime.settings
    runtime.settings = replace(s, console=replace(s.console, viewer_tokens=()))
    assert (await client.get("/console", allow_redirects=False)).status == 303

async def test_read_api_takes_viewer_tokens_but_sync_stays_admin(make_client: Any) -> None:
    client = await start(make_client)
    for path in READS:
        assert (await client.get(path, headers=bearer(VIEWER))).status == 200, path
        assert (await client.get(path, headers=bearer("wrong"))).status == 401, path
    refused = await client.post("/v1/sync", headers=bearer(VIEWER))
    assert refused.status == 401
    assert (await client.post("/v1/sync", headers=bearer(ADMIN))).status == 409  # sync off


async def test_nps_by_account_shows_the_stored_name(make_client: Any) -> None:
    client = await start(make_client)
    report = await (await client.get("/v1/nps?by=account", headers=bearer())).json()
    names = {g["key"]: g["name"] for g in report["groups"]}
    assert names == {"acc-1": "Initech", "acc-2": "Globex", "acc-3": "Hooli"}


async def test_responses_filters(make_client: Any) -> None:
    client = await start(make_client)
    await login(client, VIEWER)

    async def users(query: str) -> list[str]:
        body = await (await client.get(f"/v1/responses?{query}", headers=bearer())).json()
        return [r["user_id"] for r in body["responses"]]

    assert await users("") == ["u1", "u2", "u3", "u4", "u5", "u6", "u7"]  # newest first
    assert await users("category=detractor") == ["u4", "u5", "u6"]
    assert await users("category=promoter") == ["u1", "u2"]
    assert await users("score_min=7&score_max=8") == ["u3", "u7"]
    assert await users("account=acc-2") == ["u3", "u4", "u5"]
    assert await users("q=GLOBEX") == ["u3", "u4", "u5"]  # email, any case
    assert await users("q=price") == ["u6"]  # comment
    assert await users("q=Ann%20Lee") == ["u1"]  # name
    assert await users("q=100%25") == []  # % is a character, not a wildcard
    clock_now = client.server.app[RUNTIME].clock.now()
    since = (clock_now.date().toordinal() - 30)
    from datetime import date
    day = date.fromordinal(since).isoformat()
    assert await users(f"since={day}") == ["u1", "u2", "u3", "u4"]
    assert await users(f"until={day}") == ["u5", "u6", "u7"]
    page = await client.get("/console/responses?category=detractor")
    text = await page.text()
    assert "Di Fox" in text and "Ann Lee" not in text
    assert 'href="/console/users/u4"' in text


@pytest.mark.parametrize("query, fix", [
    ("category=grumpy", "category must be promoter, passive or detractor"),
    ("score_min=11", "score_min must be a whole number from 0 to 10"),
    ("score_min=9&score_max=2", "score_min is above score_max"),
    ("since=yesterday", "since must be a date like 2026-03-01"),
    ("limit=501", "limit must be a whole number from 1 to 500"),
    ("cursor=%%%", "cursor is not one this server handed out"),
    # The calendar's edges and numbers too long for int(): each was a 500.
    ("until=9999-12-31", "until is out of range"),
    ("since=0001-01-01T00:00:00%2B14:00", "since is out of range"),
    ("until=9999-12-31T23:59:59-14:00", "until is out of range"),
    ("score_min=" + "9" * 5000, "score_min must be a whole number from 0 to 10"),
    ("score_max=%C2%B2", "score_max must be a whole number from 0 to 10"),
    ("limit=" + "9" * 5000, "limit must be a whole number from 1 to 500"),
])
async def test_bad_filters_are_a_400_saying_what_to_fix(make_client: Any, query: str,
                                                         fix: str) -> None:
    client = await start(make_client)
    response = await client.get(f"/v1/responses?{query}", headers=bearer())
    assert response.status == 400
    assert fix in (await response.json())["message"]
    if not query.startswith("limit"):
        await login(client, VIEWER)
        page = await client.get(f"/console/responses?{query}")
        assert page.status == 400 and fix in await page.text()


async def test_cursor_paging_visits_every_answer_once(make_client: Any) -> None:
    client = await start(make_client)
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        query = "limit=2" + (f"&cursor={cursor}" if cursor else "")
        body = await (await client.get(f"/v1/responses?{query}", headers=bearer())).json()
        assert len(body["responses"]) <= 2
        seen += [r["user_id"] for r in body["responses"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == ["u1", "u2", "u3", "u4", "u5", "u6", "u7"]


async def test_csv_parses_with_the_header_and_neutralised_formulas(make_client: Any) -> None:
    client = await start(make_client)
    await login(client, VIEWER)
    response = await client.get("/console/responses.csv?account=acc-2")
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert "attachment" in response.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO((await response.read()).decode("utf-8"))))
    assert rows[0] == ["answered_at", "user_id", "email", "name", "accounts", "score",
                       "category", "comment"]
    by_user = {r[1]: r for r in rows[1:]}
    assert set(by_user) == {"u3", "u4", "u5"}
    assert by_user["u5"][7] == "'" + FORMULA_COMMENT
    assert by_user["u4"][7] == SCRIPT_COMMENT
    assert by_user["u4"][3:7] == ["Di Fox", "acc-2", "3", "detractor"]
    everything = await client.get("/console/responses.csv")
    comments = {r[1]: r[7] for r in csv.reader(io.StringIO(await everything.text()))}
    assert comments["u6"] == "'-1 for the price" and comments["u7"] == "'@team ok"


async def test_a_script_comment_is_text_on_every_page(make_client: Any) -> None:
    client = await start(make_client)
    await login(client, ADMIN)
    for path in ("/console/responses", "/console/users/u4", "/console/accounts/acc-2"):
        text = await (await client.get(path)).text()
        assert "<script>" not in text, path
        assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in text, path


async def test_customer_search_account_names_and_queue(make_client: Any) -> None:
    client = await start(make_client)
    await login(client, VIEWER)
    found = await (await client.get("/console/users?q=di@glo")).text()
    assert 'href="/console/users/u4"' in found and "u1" not in found
    assert 'href="/console/users/u6"' in await (await client.get("/console/users?q=flo")).text()
    exact = await client.get("/console/users?q=u3", allow_redirects=False)
    assert exact.status == 303 and exact.headers["Location"] == "/console/users/u3"
    customer = await (await client.get("/console/users/u3")).text()
    assert "Globex" in customer and "skipped: surveyed 10 days ago" in customer
    accounts = await (await client.get("/console/accounts?sort=nps&order=desc")).text()
    assert accounts.index("Initech") < accounts.index("Hooli") < accounts.index("Globex")
    queue = await (await client.get("/console/queue")).text()
    assert "14 days after signup" in queue and "Ivy Ng" in queue
    assert "re-survey interval 26 weeks" in queue
    missing = await client.get("/console/users/nobody")
    assert missing.status == 404


async def test_dashboard_figures_match_v1_nps(make_client: Any) -> None:
    client = await start(make_client)
    await login(client, VIEWER)
    nps = await (await client.get("/v1/nps", headers=bearer())).json()
    text = await (await client.get("/console")).text()
    assert f'data-figure="overall-promoters">{nps["promoters"]}<' in text
    assert f'data-figure="overall-detractors">{nps["detractors"]}<' in text
    assert f'data-figure="overall-sent">{nps["sent"]}<' in text
    assert f"{nps['nps']:+.1f}" in text
    assert "<svg" in text and "<polyline" in text
    assert "<svg" in await (await client.get("/console?by=month")).text()
