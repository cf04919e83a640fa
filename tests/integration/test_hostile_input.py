"""Hostile input at both intake doors and the survey links: whatever arrives, npsd answers
2xx or 4xx (never 5xx), keeps serving, and stores every message it acknowledged."""

from __future__ import annotations

import asyncio
import gzip
import json
import random
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
from tests.conftest import basic

JSON_TYPE = {"Content-Type": "application/json"}
HOSTILE = settings(max_examples=40, deadline=None,
                   suppress_health_check=[HealthCheck.function_scoped_fixture,
                                          HealthCheck.too_slow])

# --- strategies ------------------------------------------------------------------------
nasty_text = st.sampled_from(["", " ", "\x00", "a\x00b", "\ud800", "\udfff", "🙂", "null",
                              "x" * 300, "<script>", "'; DROP TABLE events; --", "\u202e"])
text = st.text(max_size=12) | nasty_text
leaves = (st.none() | st.booleans() | st.integers() | text
          | st.floats(allow_nan=False, allow_infinity=False))
json_values = st.recursive(
    leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12)
ids = text | st.integers() | st.floats(allow_nan=False) | st.none() | st.booleans()
timestamps = (
    st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat())
    | st.sampled_from(["1970-01-01T00:00:00Z", "9998-12-31T23:59:59Z", "2025-01-01",
                       "2025-01-01T00:00:00+14:00", "2025-13-45T99:99:99Z",
                       "2020-05-09 23:54:49.209808489 +0000 UTC m=+7.2", "now"])
    | json_values
)
trait_names = st.sampled_from(["email", "createdAt", "created_at", "firstName", "lastName",
                               "name", "gender", "timezone", "locale", "groupId", "plan",
                               "employees", "industry", "account_name"])
objects = st.dictionaries(trait_names | text, json_values | timestamps, max_size=5)
message_types = st.sampled_from(["identify", "group", "track", "page", "screen", "alias",
                                 "IDENTIFY", " track ", "teleport", ""]) | json_values
messages = st.fixed_dictionaries(
    {"type": message_types, "messageId": ids},
    optional={"userId": ids, "user_id": ids, "anonymousId": ids, "groupId": ids,
              "previousId": ids, "event": text | json_values, "name": text,
              "action": message_types, "traits": objects | json_values,
              "properties": objects | json_values,
              "context": st.fixed_dictionaries(
                  {}, optional={"timezone": text, "locale": text, "groupId": ids,
                                "traits": objects}) | json_values,
              "timestamp": timestamps, "originalTimestamp": timestamps,
              "receivedAt": timestamps, "sentAt": timestamps},
)
segment_bodies = (messages | st.lists(messages | json_values, max_size=6)
                  | st.fixed_dictionaries({"batch": st.lists(messages, max_size=6)})
                  | json_values)
batch_bodies = (
    st.fixed_dictionaries({"batch": st.lists(messages | json_values, max_size=6)},
                          optional={"sentAt": timestamps, "writeKey": text | json_values,
                                    "context": json_values})
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
    return str(value).strip() or None


def raws_of(path: str, payload: Any) -> list[Any]:
    if path == "/v1/batch":
        return payload["batch"]
    if isinstance(payload, list):
        return payload
    if isinstance(payload, dict) and isinstance(payload.get("batch"), list):
        return payload["batch"]
    return [payload]


async def stored_ids(client: Any, wanted: set[str]) -> set[str]:
    async with client.server.app[RUNTIME].db.read() as conn:
        rows = await conn.execute(sa.select(EVENTS.c.message_id)
                                  .where(EVENTS.c.message_id.in_(sorted(wanted))))
        return {r[0] for r in rows}


async def check_answer(client: Any, path: str, body: bytes, payload: Any,
                       headers: dict[str, str] | None = None) -> None:
    response = await client.post(path, data=body, headers={**JSON_TYPE, **basic(),
                                                           **(headers or {})})
    text = await response.text()
    assert response.status < 500, (response.status, text[:300], body[:300])
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
    response = await client.post("/v1/segment", data=encode(identify),
                                 headers={**JSON_TYPE, **basic()})
    assert response.status == 200, await response.text()
    assert (await response.json())["accepted"] + (await response.json())["duplicates"] == 1


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
    await check_answer(client, "/v1/batch", encode(payload),
                       payload if isinstance(payload, dict) else None)
    await still_serving(client)


@HOSTILE
@given(body=st.binary(max_size=512), zipped=st.booleans(),
       path=st.sampled_from(["/v1/segment", "/v1/batch", "/v1/track"]))
async def test_arbitrary_bytes(client: Any, body: bytes, zipped: bool, path: str) -> None:
    headers = {"Content-Encoding": "gzip"} if zipped else {}
    response = await client.post(path, data=body, headers={**JSON_TYPE, **basic(), **headers})
    assert response.status < 500, (response.status, await response.text())
    await still_serving(client)
