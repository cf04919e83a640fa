"""`npsd run` under hostile clients, as an attacker on the network would try it: gzip bombs
to an unknown route, to the intake without and with a valid key, and to a survey link;
bodies that trickle in; connections left idle. Meanwhile /healthz keeps answering, memory
stays bounded, the daemon stays up and what was accepted is kept.

The thresholds are generous for a loaded 2-core machine; the figures on an idle one come
from bench/hostile.py."""

from __future__ import annotations

import asyncio
import email
import json
import re
from email.message import EmailMessage
from email.policy import default
from pathlib import Path

from tests.conftest import basic, bearer
from tests.harness import Daemon
from tests.hostile_clients import (
    Answer,
    closed_by_server,
    gzip_bomb,
    peak_rss_mb,
    post_raw,
    probing,
    request_head,
    rss_mb,
    trickle,
)

JSON = {"Content-Type": "application/json"}
GZIP = {"Content-Encoding": "gzip"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def _identify(npsd: Daemon, user_id: str) -> Answer:
    """On a connection of its own: with keep-alive at 2 s, a pooled one may be closing."""
    body = json.dumps({"type": "identify", "userId": user_id, "messageId": f"{user_id}-1",
                       "traits": {"email": f"{user_id}@example.com"}}).encode()
    return await post_raw("127.0.0.1", npsd.port, "/v1/segment", body, {**JSON, **basic()})


async def _token(npsd: Daemon, outbox: Path) -> str:
    assert (await _identify(npsd, "target")).status == 200
    async with asyncio.timeout(30):
        while not list(outbox.glob("*.eml")):
            await asyncio.sleep(0.05)
    [eml] = list(outbox.glob("*.eml"))
    mail = email.message_from_bytes(eml.read_bytes(), policy=default)
    assert isinstance(mail, EmailMessage)
    part = mail.get_body(("plain",))
    assert part is not None
    match = re.search(r"/s/([A-Za-z0-9_-]+)\?score=", part.get_content())
    assert match is not None
    return match.group(1)


async def _idle(host: str, port: int, count: int) -> list[float | None]:
    """Connections that send one request and then nothing, and some that send nothing."""
    async def one(send: bool) -> float | None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            if send:
                writer.write(request_head("GET", "/healthz", {}, None))
                await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
            return await closed_by_server(reader, timeout_s=15)
        finally:
            writer.close()

    return list(await asyncio.gather(*(one(i % 2 == 0) for i in range(count))))


async def test_bombs_and_slow_clients_cost_nothing(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    npsd = Daemon(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'npsd.db'}",
                  server={"keepalive_timeout": "2s", "body_timeout": "3s"},
                  survey={"max_delay": 0})
    async with npsd:
        assert npsd.proc is not None
        pid, host, port = npsd.proc.pid, "127.0.0.1", npsd.port
        token = await _token(npsd, outbox)
        before = rss_mb(pid)
        bomb = gzip_bomb(512)
        bombs = [("/nonexistent", {}, 404), ("/v1/segment", JSON, 401),
                 ("/v1/segment", {**JSON, **basic()}, 413), (f"/s/{token}", FORM, 413),
                 ("/v1/segment", JSON, 401), ("/nonexistent", {}, 404)]
        async with probing(host, port) as probe:
            attack = asyncio.gather(
                *(post_raw(host, port, path, bomb, {**GZIP, **headers})
                  for path, headers, _ in bombs),
                *(trickle(host, port, path, headers, 50_000, byte_every_s=0.1, timeout_s=15)
                  for path, headers in (("/v1/segment", {**JSON, **basic()}),
                                        (f"/s/{token}", FORM), ("/v1/batch", basic()))),
                _idle(host, port, 10))
            # Real traffic in the middle of it is taken and kept.
            kept = await _identify(npsd, "keeper")
            assert kept.status == 200 and json.loads(kept.body)["accepted"] == 1
            results = await asyncio.wait_for(attack, timeout=60)
        answers, trickled, idle = results[:len(bombs)], results[len(bombs):-1], results[-1]
        # Refused unread (no key, unknown route, a Content-Length over the page's 64 KB),
        # the connection is closed under a client still sending: it may see the reset
        # instead of the answer (0). The keyed intake 413 comes after reading: it is seen.
        for answer, (path, headers, status) in zip(answers, bombs, strict=True):
            read = "Authorization" in headers
            assert answer.status == status or (answer.status == 0 and not read), (
                path, answer)
        for answer, closed in trickled:
            assert answer.status == 408 and closed is not None and closed < 12, answer
        assert all(t is not None and t < 12 for t in idle), idle
        summary = probe.summary()
        assert summary["failures"] == 0 and summary["count"] >= 5, summary
        assert summary["max_ms"] < 1000, summary  # old: stalled 3.25 s by three bombs
        # Before: RSS rose from 167 to 960 MB with one 199 KB form bomb.
        assert peak_rss_mb(pid) - before < 250, (before, peak_rss_mb(pid))
        assert npsd.proc.returncode is None
        user = await post_raw(host, port, "/v1/users/keeper", b"", bearer(), method="GET")
        assert user.status == 200 and json.loads(user.body)["email"] == "keeper@example.com"
        # Refusals are in the journal, without the key.
        refused = npsd.events("intake.refused")
        assert {e["reason"] for e in refused} >= {"missing_credentials", "body_too_large",
                                                  "body_timeout"}
    assert not [line for line in npsd.raw_log if '"level": "error"' in line]
