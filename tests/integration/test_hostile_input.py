"""Hostile input at both intake doors and the survey links: whatever arrives, npsd answers
2xx or 4xx (never 5xx), keeps serving, and stores every message it acknowledged."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import math
import random
import re
import string
from datetime import UTC
from typing import Any
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.runtime import RUNTIME
from storage.sqlutil import EVENTS
from tests.conftest import basic, bearer

JSON_TYPE = {"Content-Type": "application/json"}
HOSTILE = settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# --- strategies ------------------------------------------------------------------------
nasty_text = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "a\x00b",
        "\ud800",
        "\udfff",
        "🙂",
        "null",
        "x" * 300,
        "<script>",
        "'; DROP TABLE events; --",
        "\u202e",
    ]
)
text = st.text(max_size=12) | nasty_text
leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | text
    | st.floats(allow_nan=False, allow_infinity=False)
)
json_values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)
ids = text | st.integers() | st.floats(allow_nan=False) | st.none() | st.booleans()
timestamps = (
    st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat())
    | st.sampled_from(
        [
            "1970-01-01T00:00:00Z",
            "9998-12-31T23:59:59Z",
            "2025-01-01",
            "2025-01-01T00:00:00+14:00",
            "2025-13-45T99:99:99Z",
            "2020-05-09 23:54:49.209808489 +0000 UTC m=+7.2",
            "now",
        ]
    )
    | json_values
)
trait_names = st.sampled_from(
    [
        "email",
        "createdAt",
        "created_at",
        "firstName",
        "lastName",
        "name",
        "gender",
        "timezone",
        "locale",
        "groupId",
        "plan",
        "employees",
        "industry",
        "account_name",
    ]
)
objects = st.dictionaries(trait_names | text, json_values | timestamps, max_size=5)
# No "delete": it erases the user's events rows by design, so the check that every
# acknowledged messageId is stored would not hold for it.
message_types = (
    st.sampled_from(
        [
            "identify",
            "group",
            "track",
            "page",
            "screen",
            "alias",
            "IDENTIFY",
            " track ",
            "teleport",
            "",
        ]
    )
    | json_values
)
messages = st.fixed_dictionaries(
    {"type": message_types, "messageId": ids},
    optional={
        "userId": ids,
        "user_id": ids,
        "anonymousId": ids,
        "groupId": ids,
        "previousId": ids,
        "event": text | json_values,
        "name": text,
        "action": message_types,
        "traits": objects | json_values,
        "properties": objects | json_values,
        "context": st.fixed_dictionaries(
            {}, optional={"timezone": text, "locale": text, "groupId": ids, "traits": objects}
        )
        | json_values,
        "timestamp": timestamps,
        "originalTimestamp": timestamps,
        "receivedAt": timestamps,
        "sentAt": timestamps,
    },
)
segment_bodies = (
    messages
    | st.lists(messages | json_values, max_size=6)
    | st.fixed_dictionaries({"batch": st.lists(messages, max_size=6)})
    | json_values
)
batch_bodies = (
    st.fixed_dictionaries(
        {"batch": st.lists(messages | json_values, max_size=6)},
        optional={"sentAt": timestamps, "writeKey": text | json_values, "context": json_values},
    )
    | json_values
)


# --- helpers ---------------------------------------------------------------------------
def encode(value: Any) -> bytes:
    return json.dumps(value).encode()  # ASCII: lone surrogates travel as \udXXX escapes


def expected_id(raw: Any) -> str | None:
    """The messageId npsd keeps for a message it accepted, as messages.py reads it."""
    if not isinstance(raw, dict):
        return None
    value = raw.get("messageId")
    if value is None:
        value = raw.get("message_id")
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None  # Infinity arrives as null: npsd fills a messageId in
    if isinstance(value, str):  # NUL and lone surrogates are stored as U+FFFD
        value = re.sub("[\x00\ud800-\udfff]", "\ufffd", value)
    return str(value).strip() or None


def lone(path: str, payload: Any) -> bool:
    """SPEC: /v1/segment answers 501 to a lone message of an unknown type (the one 5xx)."""
    return (
        path == "/v1/segment"
        and not isinstance(payload, list)
        and not (isinstance(payload, dict) and isinstance(payload.get("batch"), list))
    )


def raws_of(path: str, payload: Any) -> list[Any]:
    if path == "/v1/batch":
        return payload["batch"]
    if isinstance(payload, list):
        return payload
    if isinstance(payload, dict) and isinstance(payload.get("batch"), list):
        return payload["batch"]
    return [payload]


async def stored_ids(client: Any, wanted: set[str]) -> set[str]:
    async with client.server.app[RUNTIME].store.db.read() as conn:
        rows = await conn.execute(
            sa.select(EVENTS.c.message_id).where(EVENTS.c.message_id.in_(sorted(wanted)))
        )
        return {r[0] for r in rows}


async def check_answer(
    client: Any, path: str, body: bytes, payload: Any, headers: dict[str, str] | None = None
) -> None:
    response = await client.post(
        path, data=body, headers={**JSON_TYPE, **basic(), **(headers or {})}
    )
    text = await response.text()
    assert response.status < 500 or (response.status == 501 and lone(path, payload)), (
        response.status,
        text[:300],
        body[:300],
    )
    if response.status != 200 or payload is None:
        return
    answer = json.loads(text)
    rejected = {r["index"] for r in answer.get("rejected", [])}
    raws = raws_of(path, payload)
    acknowledged = {expected_id(raw) for i, raw in enumerate(raws) if i not in rejected}
    wanted = {i for i in acknowledged if i is not None}
    missing = wanted - await stored_ids(client, wanted) if wanted else set()
    assert not missing, (missing, answer)


async def still_serving(client: Any) -> None:
    identify = {"type": "identify", "userId": "after-the-storm", "traits": {"email": "a@x.io"}}
    response = await client.post(
        "/v1/segment", data=encode(identify), headers={**JSON_TYPE, **basic()}
    )
    assert response.status == 200, await response.text()
    answer = await response.json()
    assert answer["accepted"] + answer["duplicates"] == 1


# --- properties ------------------------------------------------------------------------
@pytest.fixture
async def client(make_client: Any) -> Any:
    """One server per test function: hypothesis runs every example against it."""
    return await make_client()


@HOSTILE
@given(payload=segment_bodies)
async def test_arbitrary_json_at_the_segment_door(client: Any, payload: Any) -> None:
    await check_answer(client, "/v1/segment", encode(payload), payload)
    await still_serving(client)


@HOSTILE
@given(payload=batch_bodies)
async def test_arbitrary_json_at_the_tracking_api(client: Any, payload: Any) -> None:
    await check_answer(
        client, "/v1/batch", encode(payload), payload if isinstance(payload, dict) else None
    )
    await still_serving(client)


@HOSTILE
@given(
    body=st.binary(max_size=512),
    zipped=st.booleans(),
    path=st.sampled_from(["/v1/segment", "/v1/batch", "/v1/track"]),
)
async def test_arbitrary_bytes(client: Any, body: bytes, zipped: bool, path: str) -> None:
    headers = {"Content-Encoding": "gzip"} if zipped else {}
    response = await client.post(path, data=body, headers={**JSON_TYPE, **basic(), **headers})
    unknown_type = response.status == 501 and path == "/v1/segment"
    assert response.status < 500 or unknown_type, (response.status, await response.text())
    await still_serving(client)


# --- explicit cases --------------------------------------------------------------------
def identify_with(traits_json: str, message_id: str) -> bytes:
    return (
        f'{{"type": "identify", "userId": "h-{message_id}", "messageId": "{message_id}", '
        f'"traits": {traits_json}}}'
    ).encode()


async def test_deep_nesting_and_huge_numbers(client: Any) -> None:
    depth = 100_000
    cases = [
        b"[" * depth,
        b"[" * depth + b"]" * depth,
        b'{"a":' * depth + b"1" + b"}" * depth,
        identify_with("[" * depth + "]" * depth, "deep-1"),
        identify_with('{"n": ' + "[" * 900 + "]" * 900 + "}", "deep-2"),
        identify_with('{"n": 1e999999, "m": -1e999999, "employees": 1e308}', "huge-1"),
        identify_with('{"n": ' + "9" * 10_000 + "}", "huge-2"),
        identify_with('{"n": ' + "9" * 4_000 + ', "employees": ' + "1" * 4_000 + "}", "huge-3"),
        identify_with('{"n": NaN, "m": Infinity, "k": -Infinity}', "huge-4"),
    ]
    for path in ("/v1/segment", "/v1/batch"):
        for body in cases:
            if path == "/v1/batch":
                body = b'{"batch": [' + body + b"]}"
            response = await client.post(path, data=body, headers={**JSON_TYPE, **basic()})
            assert response.status < 500, (path, body[:80], await response.text())
    for user_id in ("h-deep-2", "h-huge-1", "h-huge-3", "h-huge-4"):
        response = await client.get(f"/v1/users/{user_id}", headers=bearer())
        assert response.status == 200, (user_id, await response.text())
        json.loads(await response.text(), parse_constant=_no_constants)  # strict JSON out
    await still_serving(client)


def _no_constants(name: str) -> Any:
    raise AssertionError(f"{name} is not JSON")


async def test_invalid_utf8_and_lone_surrogates(client: Any) -> None:
    bad_utf8 = [
        b'{"type": "identify", "userId": "\xff\xfe", "messageId": "u8-1"}',
        b'{"type": "identify", "userId": "ok", "traits": {"name": "\xc3\x28"}}',
        b'{"type": "identify", "userId": "ok", "traits": {"name": "\xed\xa0\x80"}}',
    ]
    for path in ("/v1/segment", "/v1/identify"):
        for body in bad_utf8:
            response = await client.post(path, data=body, headers={**JSON_TYPE, **basic()})
            assert response.status < 500, (path, body, await response.text())
    surrogates = {
        "type": "identify",
        "userId": "sur-\ud800",
        "anonymousId": "\udfff",
        "messageId": "sur-1\udc00",
        "traits": {"email": "\ud800@x.io", "name": "a\x00b", "\ud83d": "key"},
        "context": {"timezone": "\udfff", "locale": "\x00"},
    }
    for path, payload in (
        ("/v1/segment", surrogates),
        ("/v1/segment", [surrogates, {**surrogates, "messageId": "sur-2"}]),
        ("/v1/batch", {"batch": [{**surrogates, "messageId": "sur-3\x00"}]}),
        ("/v1/track", {"userId": "\ud800", "event": "\udfff\x00"}),
    ):
        await check_answer(client, path, encode(payload), payload)
    # An id holding what a database cannot keep is refused, saying why: replaced, two ids
    # ("mc-\x00", "mc-\ud800") would become one, and the second message a "duplicate".
    for ids in ({"userId": "uc\x00"}, {"userId": "uc\ud800"}, {"anonymousId": "a\udfff"},
                {"userId": "ok", "messageId": "mc-\x00"}, {"userId": "ok", "messageId": "mc-\ufffd"}):
        response = await client.post("/v1/segment", data=encode({"type": "identify", **ids}),
                                     headers={**JSON_TYPE, **basic()})
        assert response.status == 400, (ids, await response.text())
        assert "send ids as plain text" in (await response.json())["message"]
    assert (await client.get("/v1/users/" + quote("uc\ufffd"), headers=bearer())).status == 404
    # Elsewhere it arrives as U+FFFD rather than failing the commit.
    clean_ids = {**surrogates, "userId": "sur-1", "anonymousId": None, "messageId": "sur-4"}
    await check_answer(client, "/v1/segment", encode(clean_ids), clean_ids)
    response = await client.get("/v1/users/sur-1", headers=bearer())
    assert response.status == 200, await response.text()
    user = await response.json()
    assert user["traits"]["email"] == "\ufffd@x.io" and user["traits"]["name"] == "a\ufffdb"
    await still_serving(client)


EDGES = ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00Z",
         "9999-12-31 23:59:59.5 -1400 UTC", "0001-01-01 00:00:00 +1400"]


async def test_timestamps_at_the_edge_of_the_calendar(client: Any) -> None:
    """Year 1 at +14:00 is before year 1 in UTC: such a time is unusable, never an error,
    and the good messages sent with it are stored."""
    n = 0
    for edge in EDGES:
        for field in ("timestamp", "originalTimestamp", "sentAt", "receivedAt", "createdAt"):
            n += 1
            bad: dict[str, Any] = {"type": "identify", "userId": f"edge-{n}",
                                   "messageId": f"edge-{n}", "traits": {"email": "e@x.io"}}
            if field == "createdAt":
                bad["traits"]["createdAt"] = edge
            else:
                bad[field] = edge
            good = {"type": "identify", "userId": f"good-{n}", "messageId": f"good-{n}"}
            for path, payload in (("/v1/segment", bad), ("/v1/segment", [good, bad]),
                                  ("/v1/batch", {"batch": [good, bad], "sentAt": edge}),
                                  ("/v1/identify", {**bad, "messageId": f"edge-i-{n}"})):
                await check_answer(client, path, encode(payload), payload)
            response = await client.get(f"/v1/users/good-{n}", headers=bearer())
            assert response.status == 200, (edge, field, await response.text())
    await still_serving(client)


async def test_gzip_bomb_is_refused(make_client: Any) -> None:
    limit = 1 << 20
    client = await make_client(intake={"max_body_bytes": limit})
    bomb = gzip.compress(b"[" + b" " * (64 * limit) + b"]", compresslevel=9)
    assert len(bomb) < 100 * 1024
    for path, status in (("/v1/segment", 413), ("/v1/batch", 400)):
        response = await client.post(
            path, data=bomb, headers={**JSON_TYPE, **basic(), "Content-Encoding": "gzip"}
        )
        assert response.status == status, (path, await response.text())
    # Truncated and corrupt gzip is a 400, not a crash.
    for body in (bomb[: len(bomb) // 2], b"\x1f\x8b\x08\x00garbage"):
        response = await client.post(
            "/v1/segment", data=body, headers={**JSON_TYPE, **basic(), "Content-Encoding": "gzip"}
        )
        assert 400 <= response.status < 500
    await still_serving(client)


async def raw_request(client: Any, head: bytes, body: bytes = b"") -> int:
    """Send a hand-made request on a raw socket; the status code npsd answers, or 0 when it
    hung up without answering (for a request it refuses to read, that is fine too)."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        with contextlib.suppress(ConnectionError):  # it may stop reading a flood early
            writer.write(head + body)
            await writer.drain()
        async with asyncio.timeout(10):
            line = await reader.readline()
        return int(line.split()[1]) if line.startswith(b"HTTP/1.1 ") else 0
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_header_floods(client: Any) -> None:
    body = encode({"type": "identify", "userId": "hdr", "messageId": "hdr-1"})
    auth = basic()["Authorization"]

    def head(extra: bytes) -> bytes:
        return (
            b"POST /v1/segment HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/json\r\nAuthorization: "
            + auth.encode()
            + b"\r\n"
            + extra
            + b"Content-Length: "
            + str(len(body)).encode()
            + b"\r\nConnection: close\r\n\r\n"
        )

    many = b"".join(b"X-Flood-%d: %d\r\n" % (i, i) for i in range(40_000))
    huge = b"X-Huge: " + b"a" * (1 << 20) + b"\r\n"
    huge_auth = b"Authorization: Basic " + b"A" * 100_000 + b"\r\n"
    for extra in (many, huge, huge_auth):
        status = await raw_request(client, head(extra), body)
        assert status == 0 or 400 <= status < 500, status
    assert await raw_request(client, head(b""), body) == 200
    await still_serving(client)


async def test_random_survey_tokens_are_404(client: Any) -> None:
    rng = random.Random(20251123)
    alphabet = string.ascii_letters + string.digits + "-_.~%!$&'()*+,;=:@"
    tokens = [
        "%00",
        "a%00b",
        "%ED%A0%80",
        "%C3%28",
        "..",
        "%2F",
        "null",
        "0",
        "x" * 129,
        "x" * 2000,
        "%F0%9F%99%82",
        quote("' OR 1=1 --"),
    ]
    while len(tokens) < 200:
        kind = rng.random()
        if kind < 0.5:
            tokens.append(
                "".join(rng.choice(string.ascii_letters + string.digits + "-_") for _ in range(32))
            )
        elif kind < 0.8:
            tokens.append("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 80))))
        else:
            tokens.append(
                quote(
                    "".join(chr(rng.randint(1, 0x2FFF)) for _ in range(rng.randint(1, 20))), safe=""
                )
            )
    for token in tokens:
        for method, prefix in (("GET", "/s/"), ("POST", "/u/")):
            url = client.make_url(prefix).with_path(prefix + token, encoded=True)
            response = await client.session.request(method, url)
            assert response.status == 404, (method, token, response.status)
            response.release()
    await still_serving(client)


async def test_credentials_that_are_not_utf8_are_refused_not_a_500(client: Any) -> None:
    """Header bytes that are not UTF-8 reach the handlers escaped (surrogateescape): a token
    or a session cookie made of them matches nothing."""
    host, port = client.server.host, client.server.port
    requests = [
        (b"GET /v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xe9\xff\r\n", 401),
        (b"GET /v1/users/u1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer caf\xc3\r\n", 401),
        (b"GET /console/responses HTTP/1.1\r\nHost: x\r\nCookie: npsd_session=\xe9\r\n", 303),
        (b"GET /console HTTP/1.1\r\nHost: x\r\nCookie: npsd_session=a\xff\xfeb\r\n", 303),
    ]
    for head, status in requests:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(head + b"Connection: close\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), timeout=5)
        finally:
            writer.close()
        assert answer.startswith(b"HTTP/1.1 %d " % status), (head, answer[:200])
    await still_serving(client)
