"""Request bodies cost a stranger's request nothing: no body is read or inflated before the
route and its credentials are known, gzip is inflated in slices up to each route's limit
while /healthz keeps answering, slow and idle connections are closed, and malformed page
input gets a 4xx page that says what to fix."""

from __future__ import annotations

import asyncio
import email
import gzip
import hashlib
import hmac
import json
import re
import time
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import Any

from daemon.runtime import RUNTIME
from jobs.dispatch import Dispatcher
from jobs.email import make_backend
from tests.conftest import basic
from tests.hostile_clients import (
    closed_by_server,
    gzip_bomb,
    post_raw,
    probing,
    request_head,
    trickle,
)

JSON = {"Content-Type": "application/json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def _where(client: Any) -> tuple[str, int]:
    return client.server.host, client.server.port


async def survey_token(client: Any, tmp_path: Path, user_id: str = "u1") -> str:
    """Identify a user, send their survey through the file backend, take the token."""
    identify = {"type": "identify", "userId": user_id, "messageId": f"m-{user_id}",
                "traits": {"email": f"{user_id}@example.com"}}
    response = await client.post("/v1/segment", json=identify, headers=basic())
    assert response.status == 200, await response.text()
    runtime = client.server.app[RUNTIME]
    backend = make_backend(runtime.settings.email)
    dispatcher = Dispatcher(runtime.store, runtime.clock, runtime.owner, lambda: runtime.settings,
                            lambda: backend)
    assert await dispatcher.run_once() == 1
    await backend.close()
    [eml] = sorted((tmp_path / "outbox").glob("*.eml"))
    mail = email.message_from_bytes(eml.read_bytes(), policy=default)
    assert isinstance(mail, EmailMessage)
    part = mail.get_body(("plain",))
    assert part is not None
    match = re.search(r"/s/([A-Za-z0-9_-]+)\?score=", part.get_content())
    assert match is not None
    return match.group(1)


# --- bombs ------------------------------------------------------------------------------
async def test_gzip_bombs_are_not_inflated_and_healthz_keeps_answering(
        make_client: Any) -> None:
    """A 0.5 MB gzip of 512 MiB posted where nothing takes it (an unknown route, intake
    without credentials) is not inflated at all; with a valid key it is inflated up to the
    limit only, in slices. /healthz answers meanwhile (the old code stalled it for seconds,
    inflating 512 MiB per bomb)."""
    client = await make_client(intake={"max_body_bytes": 1 << 20})
    host, port = _where(client)
    bomb = gzip_bomb()
    zipped = {**JSON, "Content-Encoding": "gzip"}
    cases = [("/nonexistent", {}, 404), ("/v1/segment", {}, 401),
             ("/v1/segment", basic("wrong-key"), 401), ("/v1/segment", basic(), 413),
             ("/v1/batch", {}, 400), ("/v1/batch", basic("wrong-key"), 401),
             ("/v1/batch", basic(), 400)]  # the Tracking API answers 400 for size
    async with probing(host, port) as probe:
        answers = await asyncio.gather(*(
            post_raw(host, port, path, bomb, {**zipped, **auth}) for path, auth, _ in cases))
        await asyncio.sleep(0.3)  # the probe also runs after the answers (old: lingering)
    # A refusal that reads nothing closes the connection under a client still sending:
    # the client may then see the reset instead of the answer (status 0).
    # Only the keyed /v1/segment bomb is read (and drained after its 413).
    for answer, (path, auth, status) in zip(answers, cases, strict=True):
        assert answer.status == status or (answer.status == 0 and status != 413), (
            path, auth, answer)
    for answer in answers[1:]:
        assert answer.status == 0 or "message" in json.loads(answer.body)
    summary = probe.summary()
    assert summary["failures"] == 0 and summary["count"] >= 3, summary
    # Under 100 ms on an idle machine (bench/hostile.py); generous here for a loaded one.
    assert summary["max_ms"] < 500, summary


async def test_no_body_is_read_before_the_credentials(make_client: Any) -> None:
    """Headers announcing a body, and no body at all: every refusal that the headers decide
    comes at once (the old code waited for the body first), and the connection is closed
    (nothing is drained)."""
    client = await make_client(intake={"shared_secrets": []})
    host, port = _where(client)
    big, page = 5_000_000, 60_000  # pages take 64 KB: a larger one is a 413 at once
    cases = [
        ("/nonexistent", {}, big, 404),
        ("/v1/segment", JSON, big, 401),                                   # no credentials
        ("/v1/segment", {**JSON, **basic("wrong")}, big, 401),             # wrong key
        ("/v1/segment", {**JSON, "X-Segment-Signature": "ab" * 20}, big, 401),  # no secrets
        ("/v1/segment", {**JSON, **basic(), "Content-Encoding": "br"}, big, 415),
        ("/v1/segment", {**JSON, **basic()}, (16 << 20) + 1, 413),
        ("/v1/batch", {**JSON, **basic("wrong")}, 100_000, 401),
        ("/v1/identify", {**JSON, **basic("wrong")}, 10_000, 401),
        ("/s/not-a-token", FORM, page, 404),
        ("/u/not-a-token", FORM, page, 404),
        ("/s/not-a-token", FORM, big, 404),  # an unknown link is unknown, whatever it sends
        ("/v1/users/u1", JSON, big, 405),  # a GET route
        ("/healthz", {}, big, 405),
    ]
    for path, headers, length, status in cases:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            started = time.perf_counter()
            writer.write(request_head("POST", path, headers, length))
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            assert int(head.split(b" ", 2)[1]) == status, (path, head)
            assert await closed_by_server(reader, timeout_s=5) is not None, path
            assert time.perf_counter() - started < 5
        finally:
            writer.close()
            await writer.wait_closed()


async def test_signature_over_a_gzip_body_still_authenticates(make_client: Any) -> None:
    """X-Segment-Signature covers the inflated body, as before; it is checked after the
    body is read within the limit."""
    client = await make_client()
    raw = json.dumps({"type": "identify", "userId": "sig-1", "messageId": "sig-1"}).encode()
    signature = hmac.new(b"s3cret", raw, hashlib.sha1).hexdigest()
    headers = {**JSON, "Content-Encoding": "gzip", "X-Segment-Signature": signature}
    response = await client.post("/v1/segment", data=gzip.compress(raw), headers=headers)
    assert response.status == 200, await response.text()
    wrong = {**headers, "X-Segment-Signature": "0" * 40}
    response = await client.post("/v1/segment", data=gzip.compress(raw), headers=wrong)
    assert response.status == 401


async def test_concatenated_gzip_and_deflate_are_read(make_client: Any) -> None:
    client = await make_client()
    one = json.dumps([{"type": "track", "userId": "z", "event": "A", "messageId": "z1"},
                      {"type": "track", "userId": "z", "event": "B", "messageId": "z2"}])
    half = len(one) // 2
    body = gzip.compress(one[:half].encode()) + gzip.compress(one[half:].encode())
    response = await client.post("/v1/segment", data=body,
                                 headers={**JSON, **basic(), "Content-Encoding": "gzip"})
    assert response.status == 200 and (await response.json())["accepted"] == 2
    import zlib
    body = zlib.compress(json.dumps({"type": "track", "userId": "z", "event": "C",
                                     "messageId": "z3"}).encode())
    response = await client.post("/v1/segment", data=body,
                                 headers={**JSON, **basic(), "Content-Encoding": "deflate"})
    assert response.status == 200 and (await response.json())["accepted"] == 1


# --- slow and idle clients ----------------------------------------------------------------
async def test_a_trickling_body_is_cut_at_the_body_timeout(make_client: Any) -> None:
    client = await make_client(server={"body_timeout": "1s"})
    host, port = _where(client)
    answer, closed = await trickle(host, port, "/v1/segment", {**JSON, **basic()}, 10_000,
                                   byte_every_s=0.05, timeout_s=8)
    assert answer.status == 408, answer
    assert "did not arrive" in json.loads(answer.body)["message"]
    assert closed is not None and closed < 6


async def test_a_trickling_sign_in_form_is_cut_at_the_body_timeout(make_client: Any) -> None:
    """The sign-in form needs no session: a client that trickles it must not hold its
    connection for ever (it did, past 270 s, before the console read forms itself)."""
    client = await make_client(server={"body_timeout": "1s"})
    host, port = _where(client)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    answer, closed = await trickle(host, port, "/console/login", form, 1_000,
                                   byte_every_s=0.05, timeout_s=8)
    assert answer.status == 408, answer
    assert "did not arrive" in answer.body.decode()
    assert closed is not None and closed < 6


async def test_an_oversized_console_form_gets_a_page(make_client: Any) -> None:
    client = await make_client()
    response = await client.post("/console/login", data={"token": "x" * 70_000},
                                 allow_redirects=False)
    assert response.status == 413 and response.content_type == "text/html"
    assert "larger than" in await response.text()


async def test_idle_keepalive_connections_close(make_client: Any) -> None:
    """After an answer, and before any request at all, an idle connection is closed after
    server.keepalive_timeout (aiohttp's default kept it an hour)."""
    client = await make_client(server={"keepalive_timeout": "1s"})
    host, port = _where(client)
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(request_head("GET", "/healthz", {}, None))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
    assert b" 200 " in head and b"close" not in head.lower()
    assert await closed_by_server(reader, timeout_s=6) is not None
    writer.close()
    reader, writer = await asyncio.open_connection(host, port)  # never sends a request
    assert await closed_by_server(reader, timeout_s=6) is not None
    writer.close()
    # Half a request line, then silence: closed as well.
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"POST /v1/segment HTTP/1.1\r\nHost: x\r\n")
    assert await closed_by_server(reader, timeout_s=6) is not None
    writer.close()


async def test_expect_100_continue_is_refused_before_the_body(make_client: Any) -> None:
    """curl sends `Expect: 100-continue` for large bodies: a request its headers refuse gets
    the final answer instead of "100 Continue", so the body is never sent."""
    client = await make_client()
    host, port = _where(client)
    body = json.dumps({"type": "track", "userId": "e", "event": "E", "messageId": "e1"})
    cases = [("/v1/segment", JSON, b"401"), ("/v1/segment", {**JSON, **basic("wrong")}, b"401"),
             ("/v1/segment", {"Content-Type": "text/csv", **basic()}, b"415"),
             ("/v1/batch", {**JSON, **basic("wrong")}, b"401"),
             ("/v1/track", {"Content-Type": "text/csv", **basic()}, b"415"),
             ("/v1/segment", {**JSON, **basic()}, b"100"),
             ("/v1/track", {**JSON, **basic()}, b"100")]
    for path, headers, first in cases:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(request_head("POST", path,
                                      {**headers, "Expect": "100-continue"}, len(body)))
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            assert head.split(b" ", 2)[1] == first, (headers, head)
            if first == b"100":
                writer.write(body.encode())
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
                assert b" 200 " in head
            else:
                assert await closed_by_server(reader, timeout_s=5) is not None
        finally:
            writer.close()
            await writer.wait_closed()


async def test_signed_bodies_read_before_their_check_are_bounded(make_client: Any) -> None:
    """Anyone can send a signature header, and a signed body must be read (up to 16 MiB) to
    check it: at most MAX_UNVERIFIED_READS are read at once; another gets 503 at once."""
    from daemon.intake import MAX_UNVERIFIED_READS

    client = await make_client(server={"body_timeout": "20s"})
    host, port = _where(client)
    runtime = client.server.app[RUNTIME]
    signed = {**JSON, "X-Segment-Signature": "0" * 40}
    slow = [asyncio.create_task(trickle(host, port, "/v1/segment", signed, 1000,
                                        byte_every_s=0.2, timeout_s=30))
            for _ in range(MAX_UNVERIFIED_READS)]
    try:
        async with asyncio.timeout(10):
            while runtime.unverified_reads < MAX_UNVERIFIED_READS:
                await asyncio.sleep(0.02)
        answer = await post_raw(host, port, "/v1/segment", b"{}", signed, timeout_s=5)
        assert answer.status == 503 and b"Retry-After" in answer.head
        # A key in the header is not held up by them.
        response = await client.post("/v1/segment", headers={**JSON, **basic()}, json={
            "type": "track", "userId": "k", "event": "E", "messageId": "k1"})
        assert response.status == 200
    finally:
        for task in slow:
            task.cancel()
        await asyncio.gather(*slow, return_exceptions=True)
    async with asyncio.timeout(10):
        while runtime.unverified_reads:
            await asyncio.sleep(0.02)
