"""Segment's HTTP Tracking API (`/v1/batch` and friends), driven by Segment's own
analytics-python client and by raw requests shaped like it, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from segment.analytics import Client
from segment.analytics.request import APIError

from daemon.runtime import RUNTIME
from storage.sqlutil import EVENTS
from tests.conftest import API_KEY, basic, bearer, fixture

JSON = {"Content-Type": "application/json"}


async def get(client: Any, path: str) -> tuple[int, Any]:
    response = await client.get(path, headers=bearer())
    return response.status, await response.json()


async def post(client: Any, path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await client.post(
        path, data=data, headers={**JSON, **(basic() if headers is None else headers)}
    )


async def event_count(client: Any) -> int:
    async with client.server.app[RUNTIME].store.db.read() as conn:
        return int(
            (await conn.execute(sa.select(sa.func.count()).select_from(EVENTS))).scalar_one()
        )


def send_with_python_client(
    url: str, suffix: str, *, gzip: bool, sync_mode: bool
) -> list[Exception]:
    """Every call of Segment's library once, then flush; runs in a worker thread."""
    errors: list[Exception] = []
    analytics = Client(
        API_KEY,
        host=url,
        gzip=gzip,
        sync_mode=sync_mode,
        max_retries=0,
        upload_interval=0.2,
        on_error=lambda e, _batch: errors.append(e),
    )
    user, anon, account = f"py-{suffix}", f"anon-{suffix}", f"acct-{suffix}"
    try:
        analytics.identify(user, {"email": f"{suffix}@example.com", "plan": "pro"})
        analytics.group(user, account, {"name": "Initech", "employees": 42})
        analytics.track(user, "Report Viewed", {"report": "nps"})
        analytics.page(user, "Docs", "Getting started", {"path": "/docs"})
        analytics.screen(user, "App", "Dashboard")
        analytics.track(anonymous_id=anon, event="Landing Viewed")
        analytics.alias(anon, user)
        if not sync_mode:
            analytics.flush()
    finally:
        if not sync_mode:
            analytics.join()
    return errors


@pytest.mark.parametrize(
    ("gzip", "sync_mode"),
    [(True, False), (False, False), (True, True)],
    ids=["batch-gzip", "batch-plain", "sync-gzip"],
)
async def test_python_client_sends_every_type(
    make_client: Any, gzip: bool, sync_mode: bool
) -> None:
    client = await make_client()
    suffix = f"{int(gzip)}{int(sync_mode)}"
    errors = await asyncio.wait_for(
        asyncio.to_thread(
            send_with_python_client,
            str(client.make_url("")).rstrip("/"),
            suffix,
            gzip=gzip,
            sync_mode=sync_mode,
        ),
        timeout=30,
    )
    assert errors == []
    assert await event_count(client) == 7
    status, body = await get(client, f"/v1/users/py-{suffix}")
    assert status == 200, body
    assert body["traits"]["email"] == f"{suffix}@example.com"
    assert body["traits"]["plan"] == "pro"
    assert body["accounts"] == [{"groupId": f"acct-{suffix}"}]
    assert f"anon-{suffix}" in body["aliases"]
    assert body["activity"]["events"] == 4  # two tracks, a page and a screen
    status, account = await get(client, f"/v1/accounts/acct-{suffix}")
    assert status == 200, account
    assert account["traits"]["name"] == "Initech" and account["traits"]["employees"] == 42
    assert account["members"] == [f"py-{suffix}"]


async def test_python_client_with_a_bad_write_key_gets_401(make_client: Any) -> None:
    client = await make_client()
    url = str(client.make_url("")).rstrip("/")

    def send() -> APIError:
        with pytest.raises(APIError) as caught:
            Client("wrong-key", host=url, sync_mode=True, max_retries=0).track("u", "Nope")
        return caught.value

    error = await asyncio.wait_for(asyncio.to_thread(send), timeout=30)
    assert error.status == 401
    assert await event_count(client) == 0


async def test_write_key_in_body_without_authorization(make_client: Any) -> None:
    client = await make_client()
    batch = fixture("tracking_api_batch")
    batch["writeKey"] = API_KEY
    response = await post(client, "/v1/batch", batch, headers={})
    assert response.status == 200, await response.text()
    assert await response.json() == {"success": True}
    status, body = await get(client, "/v1/users/019mr8mf4r")
    assert status == 200
    assert body["traits"]["email"] == "peter@initech.example"
    assert body["accounts"] == [{"groupId": "acct_123"}]
    status, account = await get(client, "/v1/accounts/acct_123")
    assert status == 200 and account["traits"]["plan"] == "enterprise"
    assert account["members"] == ["019mr8mf4r"]


async def test_bad_write_key_is_401(make_client: Any) -> None:
    client = await make_client()
    batch = fixture("tracking_api_batch")
    cases: list[tuple[dict[str, Any], dict[str, str]]] = [
        ({**batch, "writeKey": "wrong"}, {}),
        ({**batch, "writeKey": API_KEY}, basic("wrong")),  # the header wins over the body
        ({k: v for k, v in batch.items() if k != "writeKey"}, {}),
        ({k: v for k, v in batch.items() if k != "writeKey"}, basic("wrong")),
    ]
    for body, headers in cases:
        response = await post(client, "/v1/batch", body, headers=headers)
        assert response.status == 401, (body.get("writeKey"), headers)
        assert (await response.json())["message"]
    response = await post(
        client, "/v1/track", {"userId": "u", "event": "E"}, headers=basic("wrong")
    )
    assert response.status == 401
    assert await event_count(client) == 0


def _track(i: int, **extra: Any) -> dict[str, Any]:
    return {"type": "track", "userId": "lim", "event": "E", "messageId": f"m{i}", **extra}


async def test_segment_limits_answer_400(make_client: Any) -> None:
    client = await make_client()
    oversize_batch = {
        "batch": [_track(i, properties={"blob": "y" * 20_000}) for i in range(30)]
    }  # ~600 KB, each message under 32 KB
    too_many = {"batch": [_track(i) for i in range(2501)]}
    oversize_single = {"userId": "lim", "event": "Big", "properties": {"blob": "y" * 33_000}}
    for path, body in (
        ("/v1/batch", oversize_batch),
        ("/v1/batch", too_many),
        ("/v1/track", oversize_single),
    ):
        response = await post(client, path, body)
        assert response.status == 400, (path, await response.text())
        assert (await response.json())["message"]
    assert await event_count(client) == 0
    # Exactly at the message-count limit is fine.
    response = await post(client, "/v1/batch", {"batch": too_many["batch"][:2500]})
    assert response.status == 200
    assert await event_count(client) == 2500


async def test_single_endpoints_and_missing_message_ids(make_client: Any) -> None:
    client = await make_client()
    singles = {
        "identify": {"userId": "s1", "traits": {"email": "s1@example.com"}},
        "group": {"userId": "s1", "groupId": "g1", "traits": {"name": "Globex"}},
        "track": {"userId": "s1", "event": "Clicked"},
        "page": {"userId": "s1", "name": "Home"},
        "screen": {"userId": "s1", "name": "Main"},
        "alias": {"previousId": "anon-s1", "userId": "s1"},
    }
    for kind, body in singles.items():  # no messageId anywhere: npsd fills one in
        response = await post(client, f"/v1/{kind}", body)
        assert response.status == 200, (kind, await response.text())
        assert await response.json() == {"success": True}
    body = {
        "batch": [{"type": "track", "userId": "s1", "event": "A"}, {"type": "page", "userId": "s1"}]
    }
    response = await post(client, "/v1/batch", body)
    assert response.status == 200 and await response.json() == {"success": True}
    async with client.server.app[RUNTIME].store.db.read() as conn:
        ids = (await conn.execute(sa.select(EVENTS.c.message_id))).scalars().all()
    assert len(ids) == len(singles) + 2 and len(set(ids)) == len(ids) and all(ids)
    status, user = await get(client, "/v1/users/s1")
    assert status == 200 and user["accounts"] == [{"groupId": "g1"}]
    assert user["activity"]["events"] == 5 and "anon-s1" in user["aliases"]


async def test_client_retrying_a_batch_doubles_nothing(make_client: Any) -> None:
    client = await make_client()
    body = {
        "batch": [_track(i, userId="retry") for i in range(5)],
        "sentAt": datetime.now(UTC).isoformat(),
    }
    raw = json.dumps(body).encode()
    for _ in range(2):  # a client that timed out waiting sends the very same body again
        response = await post(client, "/v1/batch", raw, headers={**basic(), "X-Retry-Count": "1"})
        assert response.status == 200
    assert await event_count(client) == 5
    _, user = await get(client, "/v1/users/retry")
    assert user["activity"]["events"] == 5


def _close_to(value: str, expected: datetime, tolerance: timedelta) -> bool:
    return abs(datetime.fromisoformat(value) - expected) <= tolerance


async def test_sent_at_skew_is_corrected(make_client: Any, clock: Any) -> None:
    client = await make_client()
    server_now = clock.now()
    device = server_now + timedelta(hours=1)  # the device's clock runs an hour fast

    def at(when: datetime) -> str:
        return when.isoformat().replace("+00:00", "Z")

    body = {
        "batch": [
            {
                "type": "track",
                "userId": "skew",
                "event": "Late",
                "messageId": "k1",
                "timestamp": at(device - timedelta(minutes=10)),
            },
            {
                "type": "track",
                "userId": "skew",
                "event": "Now",
                "messageId": "k2",
                "timestamp": at(device),
            },
            # A clock thousands of years off cannot be corrected: the arrival time stands in.
            {
                "type": "track",
                "userId": "skew",
                "event": "Absurd",
                "messageId": "k3",
                "timestamp": "1970-01-01T00:00:00Z",
                "sentAt": "9998-12-31T00:00:00Z",
            },
        ],
        "sentAt": at(device),
    }
    response = await post(client, "/v1/batch", body)
    assert response.status == 200
    _, user = await get(client, "/v1/users/skew")
    tolerance = timedelta(seconds=30)
    # timestamp = receivedAt - (sentAt - originalTimestamp), not the device's time
    assert _close_to(user["activity"]["last_seen"], server_now, tolerance), user["activity"]
    assert _close_to(
        user["activity"]["first_seen"], server_now - timedelta(minutes=10), tolerance
    ), user["activity"]
    async with client.server.app[RUNTIME].store.db.read() as conn:
        rows = (
            await conn.execute(
                sa.select(EVENTS.c.message_id, EVENTS.c.timestamp).order_by(EVENTS.c.message_id)
            )
        ).all()
    expected = (server_now - timedelta(minutes=10), server_now, server_now)
    for (_, stamp), want in zip(rows, expected, strict=True):
        stamp = stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
        assert abs(stamp - want) <= tolerance


async def test_gzip_raw_batch_and_basic_auth_header(make_client: Any) -> None:
    client = await make_client()
    batch = fixture("tracking_api_batch")
    del batch["writeKey"]
    raw = gzip.compress(json.dumps(batch).encode())
    token = base64.b64encode(f"{API_KEY}:ignored".encode()).decode()
    response = await client.post(
        "/v1/batch",
        data=raw,
        headers={**JSON, "Content-Encoding": "gzip", "Authorization": f"Basic {token}"},
    )
    assert response.status == 200, await response.text()
    assert await event_count(client) == 2
