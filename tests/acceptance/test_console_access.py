"""Giving a colleague access, as the README says: add a viewer token to config.toml, SIGHUP
(`systemctl reload npsd`), and they can sign in to the console of the real `npsd run`; a
sign-in lasts across a restart; taking the token out again (and reloading) ends it."""

from __future__ import annotations

import signal
from pathlib import Path

import aiohttp

from tests.console_seed import VIEWER, csrf_of
from tests.harness import Daemon


async def _sign_in(npsd: Daemon, session: aiohttp.ClientSession, token: str) -> int:
    async with session.get(npsd.url + "/console/login") as form:
        csrf = csrf_of(await form.text())
    async with session.post(npsd.url + "/console/login", data={"token": token, "csrf": csrf},
                            allow_redirects=False) as done:
        return done.status


async def _dashboard(npsd: Daemon, session: aiohttp.ClientSession) -> int:
    async with session.get(npsd.url + "/console", allow_redirects=False) as page:
        return page.status


async def test_add_a_viewer_token_reload_sign_in_restart_and_revoke(tmp_path: Path) -> None:
    npsd = Daemon(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'npsd.db'}")
    jar = aiohttp.CookieJar(unsafe=True)  # cookies for 127.0.0.1
    async with aiohttp.ClientSession(cookie_jar=jar,
                                     timeout=aiohttp.ClientTimeout(total=30)) as session:
        await npsd.start()
        try:
            assert await _sign_in(npsd, session, VIEWER) == 401  # not a token yet
            npsd.sections["console"] = {"viewer_tokens": [VIEWER]}
            npsd.write_config()
            await npsd.send_signal(signal.SIGHUP)
            await npsd.wait_for_event("config.reloaded", 1, timeout=10)
            assert await _sign_in(npsd, session, VIEWER) == 303
            assert await _dashboard(npsd, session) == 200
            assert npsd.events("console.login")[-1]["role"] == "viewer"
            assert await npsd.stop() == 0
            await npsd.start()
            assert await _dashboard(npsd, session) == 200  # the session outlived the restart
            npsd.sections["console"] = {"viewer_tokens": []}
            npsd.write_config()
            await npsd.send_signal(signal.SIGHUP)
            await npsd.wait_for_event("config.reloaded", 2, timeout=10)
            assert await _dashboard(npsd, session) == 303  # revoked: back to the login
            assert VIEWER not in "\n".join(npsd.raw_log)  # the token is never logged
        finally:
            await npsd.close()
