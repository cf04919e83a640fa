"""What a wrong key, a stalled store or a public write key can do to the intake: refusals
are logged (never the key, body or signature) but cannot flood the journal; a stalled store
makes the doors answer 503 instead of holding every request in memory; the Tracking API
door never erases anyone."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import timedelta
from typing import Any

import asyncpg
import sqlalchemy as sa
from structlog.testing import capture_logs

from daemon.runtime import RUNTIME
from jobs.clock import MovableClock
from storage.group_commit import MAX_QUEUED_MESSAGES
from storage.sqlutil import EVENTS
from tests.conftest import basic, bearer

JSON = {"Content-Type": "application/json"}
SECRET_KEY = "wrong-key-3f9a1c"  # what an operator mistyped into Segment
SIGNATURE = "0123456789abcdef0123456789abcdef01234567"


def refused(logs: list[dict[str, Any]], reason: str | None = None) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == "intake.refused"
            and (reason is None or e["reason"] == reason)]


async def test_every_refusal_is_logged_without_secrets(make_client: Any) -> None:
    client = await make_client(intake={"max_body_bytes": 2048})
    identify = json.dumps({"type": "identify", "userId": "u", "traits": {"email": "a@b.io"}})
    cases = [
        ("/v1/segment", identify, basic(SECRET_KEY), 401, "invalid_api_key", "segment"),
        ("/v1/segment", identify, {}, 401, "missing_credentials", "segment"),
        ("/v1/segment", identify, {"X-Segment-Signature": SIGNATURE}, 401,
         "invalid_signature", "segment"),
        ("/v1/segment", "{nope", basic(), 400, "invalid_json", "segment"),
        ("/v1/segment", json.dumps({"type": "teleport", "userId": "u"}), basic(), 501,
         "unknown_type", "segment"),
        ("/v1/segment", json.dumps({"type": "identify"}), basic(), 400, "invalid_message",
         "segment"),
        ("/v1/segment", "[" + "1," * 2000 + "1]", basic(), 413, "body_too_large", "segment"),
        ("/v1/batch", json.dumps({"batch": []}), basic(SECRET_KEY), 401, "invalid_write_key",
         "tracking_api"),
        ("/v1/batch", json.dumps({"batch": {}}), basic(), 400, "invalid_batch",
         "tracking_api"),
        ("/v1/identify", json.dumps({"writeKey": SECRET_KEY, "userId": "u"}), {}, 401,
         "invalid_write_key", "tracking_api"),
    ]
    with capture_logs() as logs:
        for path, body, headers, status, _, _ in cases:
            response = await client.post(path, data=body, headers={**JSON, **headers})
            assert response.status == status, (path, await response.text())
        response = await client.post("/v1/track", data="x", headers={
            **basic(), "Content-Type": "text/csv"})
        assert response.status == 415
    lines = refused(logs)
    expected = [(s, r, d) for _, _, _, s, r, d in cases] + [
        (415, "bad_content_type", "tracking_api")]
    assert [(e["status"], e["reason"], e["door"]) for e in lines] == expected
    assert all(e["remote"] == "127.0.0.1" and e["log_level"] == "warning" for e in lines)
    text = json.dumps(logs)
    for secret in (SECRET_KEY, SIGNATURE, "a@b.io", "teleport"):
        assert secret not in text


async def test_refusals_are_rate_limited_per_reason(make_client: Any,
                                                    clock: MovableClock) -> None:
    client = await make_client()
    body = json.dumps({"type": "track", "userId": "u", "event": "E"})
    with capture_logs() as logs:
        for _ in range(25):
            response = await client.post("/v1/segment", data=body,
                                         headers={**JSON, **basic(SECRET_KEY)})
            assert response.status == 401
        # Another reason has its own budget.
        assert (await client.post("/v1/segment", data=body, headers=JSON)).status == 401
        assert len(refused(logs, "invalid_api_key")) == 10
        assert len(refused(logs, "missing_credentials")) == 1
        assert not [e for e in logs if e["event"] == "intake.refused_suppressed"]
        clock.advance(timedelta(seconds=61))
        assert (await client.post("/v1/segment", data=body,
                                  headers={**JSON, **basic(SECRET_KEY)})).status == 401
    [summary] = [e for e in logs if e["event"] == "intake.refused_suppressed"]
    assert summary["reason"] == "invalid_api_key" and summary["suppressed"] == 15
    assert summary["last_door"] == "segment" and summary["last_status"] == 401
    assert len(refused(logs, "invalid_api_key")) == 11  # a new window, logged again


class _Blocker:
    """Another process's transaction that keeps npsd's intake writer from committing."""

    def __init__(self, sqlite: sqlite3.Connection | None, pg: asyncpg.Connection | None) -> None:
        self._sqlite, self._pg = sqlite, pg

    @classmethod
    async def hold(cls, db_url: str) -> _Blocker:
        if db_url.startswith("sqlite"):
            conn = sqlite3.connect(db_url.removeprefix("sqlite+aiosqlite:///"),
                                   isolation_level=None, check_same_thread=False)
            conn.execute("BEGIN IMMEDIATE")
            return cls(conn, None)
        pg = await asyncpg.connect(db_url.replace("postgresql+asyncpg://", "postgresql://"))
        await pg.execute("BEGIN")
        await pg.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        return cls(None, pg)

    async def release(self) -> None:
        if self._sqlite is not None:
            self._sqlite.execute("ROLLBACK")
            self._sqlite.close()
        if self._pg is not None:
            await self._pg.execute("ROLLBACK")
            await self._pg.close()


async def test_a_stalled_store_answers_503_instead_of_queueing(
        make_client: Any, db_url: str) -> None:
    """The store's write lock held by another process (SQLite's, or an exclusive lock on
    the intake log on PostgreSQL): the intake writer waits, and once MAX_QUEUED_MESSAGES
    wait with it, further requests get 503 + Retry-After at once instead of piling up in
    memory (the old code held them all: +360 MB). What was admitted is committed once the
    store moves again."""
    client = await make_client()
    per_request = 2000
    requests = MAX_QUEUED_MESSAGES // per_request + 5

    def batch(n: int) -> bytes:
        return json.dumps([{"type": "track", "userId": f"u{n}", "event": "E",
                            "messageId": f"q-{n}-{i}"} for i in range(per_request)]).encode()

    bodies = [batch(n) for n in range(requests)]
    blocker = await _Blocker.hold(db_url)
    try:
        tasks = [asyncio.create_task(client.post("/v1/segment", data=body,
                                                 headers={**JSON, **basic()}))
                 for body in bodies]
        async with asyncio.timeout(8):  # well within SQLite's 10 s busy timeout
            while sum(t.done() for t in tasks) < 5:
                await asyncio.sleep(0.02)
        refused_now = [t.result() for t in tasks if t.done()]
        assert [r.status for r in refused_now] == [503] * 5
        assert all(r.headers["Retry-After"] for r in refused_now)
        assert "retry" in (await refused_now[0].json())["message"]
        assert client.server.app[RUNTIME].store.queued()[0] == MAX_QUEUED_MESSAGES
    finally:
        await blocker.release()
    async with asyncio.timeout(30):
        answers = await asyncio.gather(*tasks)
    accepted = [await r.json() for r in answers if r.status == 200]
    assert len(accepted) == requests - 5
    assert sum(a["accepted"] for a in accepted) == MAX_QUEUED_MESSAGES
    runtime = client.server.app[RUNTIME]
    async with runtime.store.db.read() as conn:
        stored = (await conn.execute(sa.select(sa.func.count()).select_from(EVENTS))).scalar()
    assert stored == MAX_QUEUED_MESSAGES
    assert runtime.store.queued() == (0, 0)


async def test_the_tracking_api_never_erases(make_client: Any) -> None:
    """Write keys are public (they ship in web pages): a delete on /v1/batch or /v1/import
    is rejected in the answer, logged, and the user is still there."""
    client = await make_client()
    response = await client.post("/v1/identify", json={
        "userId": "victim", "traits": {"email": "victim@example.com"}}, headers=basic())
    assert response.status == 200
    with capture_logs() as logs:
        for path in ("/v1/batch", "/v1/import"):
            response = await client.post(path, json={"batch": [
                {"type": "delete", "userId": "victim", "messageId": f"d1{path}"},
                {"type": "track", "userId": "victim", "event": "Seen",
                 "messageId": f"t{path}"},
                {"action": "Delete", "userId": "victim", "messageId": f"d2{path}"},
            ]}, headers=basic())
            assert response.status == 200
            answer = await response.json()
            assert [r["index"] for r in answer["rejected"]] == [0, 2]
            assert all("delete is not accepted" in r["message"] for r in answer["rejected"])
    assert [e["messages"] for e in logs if e["event"] == "intake.delete_refused"] == [2, 2]
    user = await client.get("/v1/users/victim", headers=bearer())
    assert user.status == 200
    assert (await user.json())["email"] == "victim@example.com"
    # Through /v1/segment (Segment's own deletion forwarding) a delete still erases.
    response = await client.post("/v1/segment", json={"type": "delete", "userId": "victim"},
                                 headers=basic())
    assert response.status == 200
    assert (await client.get("/v1/users/victim", headers=bearer())).status == 404
