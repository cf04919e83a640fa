"""The console in a real browser (Playwright driving Debian's Chromium) at a 390 px phone
and a 1440 px screen: a page without a session goes to the login; a viewer logs in, reads
the dashboard (the same figures as /v1/nps), filters detractors, downloads the CSV and
parses it, finds a customer and opens their page, sees a `<script>` comment as text, and
cannot start a sync. No script error and no CSP violation on any page.

Set NPSD_WRITE_SCREENSHOTS=1 to refresh docs/console-dashboard.png and
docs/console-customer.png.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from daemon.app import create_app
from daemon.request_counts import server_options
from daemon.runtime import RUNTIME
from jobs.clock import MovableClock
from tests.browser.chromium import ARGS, CHROMIUM, playwright_or_skip
from tests.conftest import ROOT, bearer, make_settings
from tests.console_seed import SCRIPT_COMMENT, VIEWER, seed_book, seed_history

WIDTHS = [390, 1440]

pytestmark = pytest.mark.asyncio(loop_scope="module")

playwright_api = playwright_or_skip()


class Site:
    def __init__(self, client: TestClient[Any, Any]) -> None:
        self.client = client

    def url(self, path: str) -> str:
        return str(self.client.make_url(path))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def site(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Site]:
    tmp = tmp_path_factory.mktemp("console")
    settings = make_settings(f"sqlite+aiosqlite:///{tmp / 'npsd.db'}", tmp,
                             console={"viewer_tokens": [VIEWER]})
    app = create_app(settings, clock=MovableClock(), run_jobs=False)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(**server_options(app[RUNTIME].metrics, settings.server))
    client: TestClient[Any, Any] = TestClient(server)
    await client.start_server()
    runtime = app[RUNTIME]
    await seed_book(runtime.store.db, runtime.clock.now())
    await seed_history(runtime.store.db, runtime.clock.now())
    try:
        yield Site(client)
    finally:
        await client.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            await b.close()


@pytest_asyncio.fixture(loop_scope="module", params=WIDTHS, ids=[f"{w}px" for w in WIDTHS])
async def page(browser: Any, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    context = await browser.new_context(viewport={"width": request.param, "height": 900},
                                        accept_downloads=True)
    p = await context.new_page()
    p.set_default_timeout(5000)
    errors: list[str] = []
    p.on("pageerror", lambda exc: errors.append(str(exc)))
    p.on("dialog", lambda d: errors.append(f"dialog: {d.message}"))  # a script that ran
    p.on("console", lambda m: errors.append(m.text) if "Refused" in m.text else None)
    try:
        yield p
    finally:
        await context.close()
    assert errors == []


async def login(site: Site, page: Any, token: str = VIEWER) -> None:
    await page.goto(site.url("/console"))
    assert "/console/login" in page.url
    await page.fill("#token", token)
    await page.click("button[type=submit]")
    await page.wait_for_selector("h1:text('Dashboard')")


async def fits(page: Any) -> None:
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"], page.url


async def test_a_page_without_a_session_goes_to_the_login(site: Site, page: Any) -> None:
    await page.goto(site.url("/console/responses?category=detractor"))
    assert "/console/login" in page.url
    assert await page.is_visible("label[for=token]")
    await page.fill("#token", VIEWER)
    await page.click("button[type=submit]")
    await page.wait_for_selector("h1:text('Responses')")  # back where it was going
    assert "category=detractor" in page.url


async def test_dashboard_numbers_are_those_of_v1_nps(site: Site, page: Any) -> None:
    await login(site, page)
    nps = await (await site.client.get("/v1/nps", headers=bearer(VIEWER))).json()
    shown = {k: await page.inner_text(f"[data-figure=overall-{k}]")
             for k in ("promoters", "passives", "detractors", "sent")}
    assert shown == {k: str(nps[k]) for k in shown}
    assert f"{nps['nps']:+.1f}" in await page.inner_text("[data-figure=overall-nps]")
    assert await page.locator("svg.chart polyline").count() == 1
    await fits(page)


async def test_filter_detractors_and_download_the_csv(site: Site, page: Any) -> None:
    await login(site, page)
    await page.click("nav >> text=Responses")
    await page.select_option("#f-category", "detractor")
    await page.click("form.filters button[type=submit]")
    await page.wait_for_url("**category=detractor**")
    scores = [int(s) for s in await page.locator("td .score").all_inner_texts()]
    assert scores and all(s <= 6 for s in scores)
    await fits(page)
    async with page.expect_download() as info:
        await page.click("text=Download these responses as CSV")
    download = await info.value
    rows = list(csv.reader(io.StringIO(Path(await download.path()).read_text("utf-8"))))
    assert rows[0] == ["answered_at", "user_id", "email", "name", "accounts", "score",
                       "category", "comment"]
    assert {r[6] for r in rows[1:]} == {"detractor"}
    assert len(rows) - 1 >= len(scores)


async def test_a_script_comment_is_shown_as_text(site: Site, page: Any) -> None:
    await login(site, page)
    await page.goto(site.url("/console/responses?q=slow%20exports"))
    assert await page.inner_text("td.comment") == SCRIPT_COMMENT


async def test_open_a_customer_from_search(site: Site, page: Any) -> None:
    await login(site, page)
    await page.click("nav >> text=Customers")
    await page.fill("#q", "cy@")
    await page.click("form.search button")
    await page.click("ul.results a")
    await page.wait_for_selector("h1:text('Cy Poe')")
    timeline = await page.inner_text("ol.timeline")
    assert "re-survey interval 26 weeks" in timeline
    assert "Globex" in await page.inner_text("main")
    await fits(page)


async def test_a_viewer_cannot_start_a_sync(site: Site, page: Any) -> None:
    await login(site, page)
    assert await page.locator("form[action='/console/sync']").count() == 0
    # Even a hand-made form with the session's CSRF token is refused.
    csrf = await page.get_attribute("form.logout input[name=csrf]", "value")
    await page.evaluate("""(csrf) => {
        const f = document.createElement('form'); f.method = 'post'; f.action = '/console/sync';
        const i = document.createElement('input'); i.name = 'csrf'; i.value = csrf;
        f.appendChild(i); document.body.appendChild(f); f.submit(); }""", csrf)
    await page.wait_for_selector("h1:text('Not allowed')")
    assert "Only the admin token may start a sync" in await page.inner_text("main")


async def test_screenshots(site: Site, browser: Any, tmp_path: Path) -> None:
    """The dashboard on a screen and a customer's page on a phone, for the README."""
    for name, path, width, height in (("dashboard", "/console", 1440, 900),
                                      ("customer", "/console/users/u4", 390, 844)):
        context = await browser.new_context(viewport={"width": width, "height": height},
                                            device_scale_factor=2 if width < 500 else 1)
        p = await context.new_page()
        await login(site, p)
        await p.goto(site.url(path))
        shot = tmp_path / f"console-{name}.png"
        await p.screenshot(path=str(shot), full_page=True)
        await context.close()
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if os.environ.get("NPSD_WRITE_SCREENSHOTS"):
            (ROOT / "docs").mkdir(exist_ok=True)
            shutil.copyfile(shot, ROOT / "docs" / shot.name)
