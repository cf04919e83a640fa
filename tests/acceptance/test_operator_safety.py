"""Operators protected from their defaults, as they meet it: `npsd run` as a process, its
stderr, its exit code, the files it creates and where."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import re
import secrets
import signal
from pathlib import Path

from tests.conftest import API_KEY
from tests.fakes.smtp_sink import SmtpSink
from tests.harness import Daemon

STRONG_KEY = "intake-" + "k" * 24
STRONG_ADMIN = "admin-" + "a" * 24


async def test_an_smtp_refusal_never_puts_the_address_in_the_log(tmp_path: Path) -> None:
    address = "zed.refused+nps@mail.example.net"
    async with SmtpSink() as sink:
        sink.fail_next(550, f"5.1.1 <{address}>: Recipient address rejected: User unknown",
                       at="RCPT")
        npsd = Daemon(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'npsd.db'}",
                      email={"backend": "smtp"})
        npsd.sections["email.smtp"] = {"host": sink.host, "port": sink.port,
                                       "security": "none"}
        async with npsd:
            status, _ = await npsd.post_segment(
                {"type": "identify", "userId": "zed", "traits": {"email": address}})
            assert status == 200
            await npsd.wait_for_event("survey.failed", timeout=20)
            assert await npsd.stop() == 0
    [failed] = npsd.events("survey.failed")
    assert failed["code"] == 550 and "Recipient address rejected" in failed["reason"]
    leaks = [line for line in npsd.raw_log if "zed.refused" in line or "mail.example" in line]
    assert leaks == []


async def test_a_malformed_request_never_puts_credentials_or_tokens_in_the_log(
        tmp_path: Path) -> None:
    admin = "Adm1n-" + secrets.token_urlsafe(18)
    token = secrets.token_urlsafe(16)
    basic = base64.b64encode(f"{API_KEY}:".encode()).decode()
    requests = [
        # A control character in a header: aiohttp prints the whole header line.
        f"GET /v1/users/u1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin}\x01\r\n\r\n",
        f"GET /v1/users/u1 HTTP/1.1\r\nHost: x\r\nAuthorization Bearer {admin}\r\n\r\n",
        # A bad request line: aiohttp prints the line, survey token included.
        f"GET /s/{token}?score=9 HTTP/1.1 junk\r\nHost: x\r\n\r\n",
        f"POST /u/{token}\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
        f"POST /v1/segment HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {basic}\x7f\r\n\r\n",
    ]
    npsd = Daemon(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'npsd.db'}",
                  admin={"token": admin})
    async with npsd:
        for request in requests:
            reader, writer = await asyncio.open_connection("127.0.0.1", npsd.port)
            writer.write(request.encode("latin-1"))
            async with asyncio.timeout(10):
                status_line = await reader.readline()
            writer.close()
            assert status_line.split()[1] == b"400", (request, status_line)
        assert await npsd.stop() == 0
    reports = [e for e in npsd.logs if e.get("logger") == "aiohttp.server"]
    assert len(reports) == len(requests)  # each was logged, with its traceback...
    assert all("Traceback" in e.get("exception", "") for e in reports)
    log = "\n".join(npsd.raw_log)
    for secret in (admin, token, basic):  # ...and none of them shows what was sent
        assert secret not in log
    assert "[redacted]" in log


def weak_daemon(tmp_path: Path, host: str, **sections: dict[str, object]) -> Daemon:
    npsd = Daemon(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'npsd.db'}",
                  intake={"api_keys": ["change-me"]}, admin={"token": "change-me-too"},
                  **sections)
    npsd.sections["server"]["host"] = host
    return npsd


async def test_sample_secrets_are_refused_off_loopback(tmp_path: Path) -> None:
    npsd = weak_daemon(tmp_path, "0.0.0.0")
    npsd.write_config()
    code, out, err = await npsd.cli("check-config")
    assert code == 2 and "ok" not in out
    await npsd.start(wait=False)
    assert await npsd.wait_exit() == 2
    await npsd.close()
    for text in (err, "\n".join(npsd.raw_log)):
        assert str(npsd.config) in text and "0.0.0.0" in text
        assert "intake.api_keys: still the sample value" in text
        assert "admin.token: still the sample value" in text
        assert "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'" in text
        assert "change-me" not in text.replace(str(npsd.config), "")
    assert not (tmp_path / "npsd.db").exists()  # refused before anything was opened


async def test_a_short_secret_from_the_environment_is_refused_by_name(tmp_path: Path) -> None:
    npsd = Daemon(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'npsd.db'}",
                  env={"NPSD_ADMIN_TOKEN": "tiny-t0ken"},
                  intake={"api_keys": [STRONG_KEY]}, admin={"token": STRONG_ADMIN})
    npsd.sections["server"]["host"] = "0.0.0.0"
    await npsd.start(wait=False)
    assert await npsd.wait_exit() == 2
    await npsd.close()
    text = "\n".join(npsd.raw_log)
    assert "environment variable NPSD_ADMIN_TOKEN: admin.token: shorter than 16" in text
    assert "tiny-t0ken" not in text and "intake.api_keys" not in text


async def test_sample_secrets_on_loopback_start_with_a_warning(tmp_path: Path) -> None:
    npsd = weak_daemon(tmp_path, "127.0.0.1")
    npsd.write_config()
    code, out, err = await npsd.cli("check-config")
    assert code == 0 and out.strip().endswith(": ok")
    assert "admin.token: still the sample value" in err and "loopback" in err
    async with npsd:
        assert await npsd.stop() == 0
    weak = {(e["key"], e["reason"]) for e in npsd.events("config.weak_secret")}
    assert weak == {("intake.api_keys", "still the sample value"),
                    ("admin.token", "still the sample value")}
    assert not [line for line in npsd.raw_log if "change-me" in line]


async def test_a_reload_bringing_a_sample_secret_in_off_loopback_is_refused(
        tmp_path: Path) -> None:
    npsd = Daemon(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'npsd.db'}",
                  intake={"api_keys": [STRONG_KEY]}, admin={"token": STRONG_ADMIN})
    npsd.sections["server"]["host"] = "0.0.0.0"
    async with npsd:
        npsd.sections["admin"]["token"] = "change-me-too"
        npsd.write_config()
        await npsd.send_signal(signal.SIGHUP)
        await npsd.wait_for_event("config.reload_failed", timeout=10)
        assert npsd.session is not None
        for token, status in ((STRONG_ADMIN, 200), ("change-me-too", 401)):
            async with npsd.session.get(npsd.url + "/v1/status",
                                        headers={"Authorization": f"Bearer {token}"}) as r:
                assert r.status == status
        assert await npsd.stop() == 0
    [failed] = npsd.events("config.reload_failed")
    assert "admin.token: still the sample value" in failed["reason"]
    assert not npsd.events("config.reloaded")


async def test_relative_paths_land_in_the_state_directory(tmp_path: Path) -> None:
    state, work = tmp_path / "state", tmp_path / "work"
    state.mkdir()
    npsd = Daemon(work, "sqlite+aiosqlite:///var/npsd.db",
                  env={"STATE_DIRECTORY": f"{state}:{tmp_path / 'second'}"},
                  email={"file_dir": "var/outbox"}, survey={"max_delay": 0})
    async with npsd:
        status, _ = await npsd.post_segment(
            {"type": "identify", "userId": "u1", "traits": {"email": "u1@example.com"}})
        assert status == 200
        await npsd.wait_for_event("survey.sent", timeout=20)
        code, out, err = await npsd.cli("status")
        assert code == 0, err
        assert await npsd.stop() == 0
    [started] = npsd.events("server.started")
    assert started["database"] == str(state / "var" / "npsd.db")
    assert started["outbox"] == str(state / "var" / "outbox")
    assert (state / "var" / "npsd.db").stat().st_size > 0
    [eml] = (state / "var" / "outbox").glob("*.eml")
    sent = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert re.fullmatch(r"<[0-9a-f]{32}@acme\.example>", str(sent["Message-ID"]))
    assert not (work / "var").exists() and not (tmp_path / "second").exists()


async def test_read_only_commands_never_create_a_database(tmp_path: Path) -> None:
    where = tmp_path / "nowhere" / "npsd.db"
    npsd = Daemon(tmp_path, "sqlite+aiosqlite:///nowhere/npsd.db",
                  segment={"write_key": "wk", "endpoint": "http://127.0.0.1:9/v1"})
    npsd.write_config()
    for command in (["report"], ["status"], ["why", "u1"], ["sync-now"]):
        code, _, err = await npsd.cli(*command)
        assert code == 1, (command, err)
        assert f"no database at {where}" in err and "npsd migrate" in err, err
        assert not where.parent.exists()
    where.parent.mkdir()
    where.touch()  # an empty file (a mistyped path created by hand): named, left untouched
    code, _, err = await npsd.cli("status")
    assert code == 1 and f"an empty file at {where}" in err, err
    assert where.stat().st_size == 0
    where.unlink()
    code, out, err = await npsd.cli("migrate")
    assert code == 0 and where.exists(), err
    code, out, err = await npsd.cli("status")
    assert code == 0 and "users: 0" in out, err
