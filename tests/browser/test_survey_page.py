"""The survey page in a real browser (Playwright driving Debian's Chromium) at a 320 px and
a 390 px phone and a 1280 px desktop: the scale on one row, a missing score that keeps the
comment, a revisit that shows the saved score, and record_on_click recording on load (never
on a plain GET). One browser and one npsd for the module; every test its own recipient.

Set NPSD_WRITE_SCREENSHOTS=1 to refresh docs/survey-phone.png and docs/survey-desktop.png.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import sqlalchemy as sa
from aiohttp.test_utils import TestClient, TestServer

from daemon.app import create_app
from daemon.request_counts import server_options
from daemon.runtime import RUNTIME, Runtime
from jobs.clock import MovableClock
from jobs.dispatch import Dispatcher
from jobs.email import EmailBackend, make_backend
from storage.sqlutil import SURVEYS
from tests.browser.chromium import ARGS, CHROMIUM, playwright_or_skip
from tests.conftest import ROOT, basic, bearer, make_settings

WIDTHS = [320, 390, 1280]

pytestmark = pytest.mark.asyncio(loop_scope="module")

playwright_api = playwright_or_skip()


class Site:
    """npsd on loopback with a file outbox, a moved clock and a dispatcher to run by hand."""

    def __init__(self, client: TestClient[Any, Any], clock: MovableClock) -> None:
        self.client, self.clock = client, clock
        self.runtime: Runtime = client.server.app[RUNTIME]
        self.backend: EmailBackend = make_backend(self.runtime.settings.email)
        self.dispatcher = Dispatcher(self.runtime.store, clock, self.runtime.owner,
                                     lambda: self.runtime.settings, lambda: self.backend)
        self.n = 0

    def url(self, path: str) -> str:
        return str(self.client.make_url(path))

    async def sent_survey(self, locale: str = "en-US") -> tuple[str, str]:
        """A new recipient with a sent survey: (user id, token)."""
        self.n += 1
        user = f"b{self.n}"
        response = await self.client.post("/v1/segment", headers=basic(), json={
            "type": "identify", "userId": user, "messageId": f"{user}-1",
            "timestamp": self.clock.now().isoformat(), "context": {"locale": locale},
            "traits": {"email": f"{user}@example.com", "firstName": "Ana"}})
        assert response.status == 200
        assert await self.dispatcher.run_once() == 1
        async with self.runtime.store.db.read() as conn:
            token = (await conn.execute(sa.select(SURVEYS.c.token).where(
                SURVEYS.c.user_id == user))).scalar_one()
        return user, str(token)

    async def saved(self, user: str) -> dict[str, Any]:
        """The survey as the admin API shows it: what the store holds."""
        response = await self.client.get(f"/v1/users/{user}", headers=bearer())
        assert response.status == 200
        [survey] = (await response.json())["surveys"]
        return dict(survey)

    def record_on_click(self, on: bool) -> None:
        s = self.runtime.settings
        self.runtime.settings = replace(s, survey=replace(s.survey, record_on_click=on))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def site(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Site]:
    tmp = tmp_path_factory.mktemp("browser")
    settings = make_settings(f"sqlite+aiosqlite:///{tmp / 'npsd.db'}", tmp,
                             survey={"max_delay": 0, "min_delay": 0})
    clock = MovableClock()
    app = create_app(settings, clock=clock, run_jobs=False)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(**server_options(app[RUNTIME].metrics, settings.server))
    client: TestClient[Any, Any] = TestClient(server)
    await client.start_server()
    s = Site(client, clock)
    try:
        yield s
    finally:
        await s.backend.close()
        await client.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            await b.close()


async def _page(browser: Any, width: int) -> AsyncIterator[Any]:
    context = await browser.new_context(viewport={"width": width, "height": 800})
    p = await context.new_page()
    p.set_default_timeout(5000)
    errors: list[str] = []
    p.on("pageerror", lambda exc: errors.append(str(exc)))
    # A CSP violation is logged to the console ("Refused to ..."); a 400 page is expected.
    p.on("console", lambda m: errors.append(m.text) if "Refused" in m.text else None)
    try:
        yield p
    finally:
        await context.close()
    assert errors == []  # no script error, no CSP violation


@pytest_asyncio.fixture(loop_scope="module", params=WIDTHS, ids=[f"{w}px" for w in WIDTHS])
async def page(browser: Any, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """The page at each width: the behaviours the issue names run at all three."""
    async for p in _page(browser, request.param):
        yield p


@pytest_asyncio.fixture(loop_scope="module")
async def phone(browser: Any) -> AsyncIterator[Any]:
    async for p in _page(browser, 390):
        yield p


async def test_scale_is_one_row(site: Site, page: Any) -> None:
    _, token = await site.sent_survey()
    await page.goto(site.url(f"/s/{token}?score=9"))
    boxes = [await label.bounding_box() for label in await page.query_selector_all(".scores label")]
    assert len(boxes) == 11
    assert len({round(b["y"]) for b in boxes}) == 1, boxes  # one top: one row
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"]  # nothing sticks out sideways
    assert all(b["width"] >= 20 for b in boxes)  # still a target a thumb can hit
    note = page.locator("#pending")
    assert await note.inner_text() == "Your answer: 9 — press Send to save it."
    await page.locator(".scores label").nth(6).click()
    assert await note.inner_text() == "Your answer: 6 — press Send to save it."


async def test_missing_score_error_keeps_the_comment(site: Site, page: Any) -> None:
    user, token = await site.sent_survey()
    await page.goto(site.url(f"/s/{token}"))
    await page.fill("#comment", "Setup took <b>ages</b>")
    # An old browser (or a script) that skips the `required` check posts without a score.
    await page.evaluate("document.getElementById('survey').noValidate = true")
    await page.click("button[type=submit]")
    await page.wait_for_selector("[role=alert]")
    assert "Please choose a score from 0 to 10" in await page.inner_text("[role=alert]")
    assert await page.input_value("#comment") == "Setup took <b>ages</b>"
    assert (await site.saved(user))["score"] is None
    await page.locator(".scores label").nth(8).click()
    await page.click("button[type=submit]")
    await page.wait_for_selector("text=You gave Acme a score of 8 out of 10")
    saved = await site.saved(user)
    assert saved["score"] == 8 and saved["comment"] == "Setup took <b>ages</b>"


async def test_comment_counter_and_limit(site: Site, phone: Any) -> None:
    _, token = await site.sent_survey()
    await phone.goto(site.url(f"/s/{token}?score=7"))
    assert await phone.inner_text("#count") == "5,000 characters left"
    await phone.fill("#comment", "x" * 4990)
    assert await phone.inner_text("#count") == "10 characters left"
    assert await phone.get_attribute("#comment", "maxlength") == "5000"


async def test_revisit_shows_the_saved_score(site: Site, page: Any) -> None:
    user, token = await site.sent_survey()
    await page.goto(site.url(f"/s/{token}?score=4"))
    await page.fill("#comment", "Too slow")
    await page.click("button[type=submit]")
    await page.wait_for_selector("text=Thank you")
    await page.goto(site.url(f"/s/{token}?score=10"))  # another link of the same email
    assert await page.is_checked("input[name=score][value='4']")
    assert not await page.is_checked("input[name=score][value='10']")
    assert "we have your answer: 4" in await page.inner_text("#answered")
    assert await page.input_value("#comment") == "Too slow"
    await page.locator(".scores label").nth(6).click()  # and it can be changed
    await page.click("button[type=submit]")
    await page.wait_for_selector("text=You gave Acme a score of 6 out of 10")
    assert (await site.saved(user))["score"] == 6


async def test_record_on_click_records_on_load_never_on_get(site: Site, page: Any) -> None:
    user, token = await site.sent_survey()
    site.record_on_click(True)
    try:
        for method in ("GET", "HEAD"):  # a mail scanner that runs no script
            response = await site.client.request(method, f"/s/{token}?score=9")
            assert response.status == 200
        assert (await site.saved(user))["score"] is None
        await page.goto(site.url(f"/s/{token}?score=9"))
        await page.wait_for_selector("text=Your answer 9 is saved")
        saved = await site.saved(user)
        assert saved["state"] == "answered" and saved["score"] == 9
        await page.fill("#comment", "Love it")
        await page.click("button[type=submit]")
        await page.wait_for_selector("text=You gave Acme a score of 9 out of 10")
        assert (await site.saved(user))["comment"] == "Love it"
    finally:
        site.record_on_click(False)


async def test_record_on_click_off_records_nothing_on_load(site: Site, phone: Any) -> None:
    user, token = await site.sent_survey()
    await phone.goto(site.url(f"/s/{token}?score=9"))
    await phone.wait_for_load_state("networkidle")
    assert (await site.saved(user))["score"] is None
    assert "press Send to save it" in await phone.inner_text("#pending")


async def test_german_page_in_the_browser(site: Site, phone: Any) -> None:
    _, token = await site.sent_survey(locale="de-CH")
    await phone.goto(site.url(f"/s/{token}?score=10"))
    assert await phone.get_attribute("html", "lang") == "de"
    assert "Ihre Antwort: 10" in await phone.inner_text("#pending")
    assert await phone.inner_text("#count") == "Noch 5.000 Zeichen"
    boxes = [await label.bounding_box() for label in await phone.query_selector_all(".scores label")]
    assert len({round(b["y"]) for b in boxes}) == 1


async def test_screenshots(site: Site, browser: Any, tmp_path: Path) -> None:
    """Phone and desktop screenshots for the README (written to docs/ on request)."""
    _, token = await site.sent_survey()
    for name, width, height in (("phone", 390, 844), ("desktop", 1280, 800)):
        context = await browser.new_context(viewport={"width": width, "height": height},
                                            device_scale_factor=2 if name == "phone" else 1)
        p = await context.new_page()
        await p.goto(site.url(f"/s/{token}?score=9"))
        await p.fill("#comment", "The weekly report saves me an hour every Monday.")
        shot = tmp_path / f"survey-{name}.png"
        await p.screenshot(path=str(shot), full_page=True)
        await context.close()
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if os.environ.get("NPSD_WRITE_SCREENSHOTS"):
            (ROOT / "docs").mkdir(exist_ok=True)
            shutil.copyfile(shot, ROOT / "docs" / shot.name)
