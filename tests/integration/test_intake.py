"""The Segment intake, end to end over HTTP, on a real SQLite file and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import hmac
import json
from typing import Any

import sqlalchemy as sa

from daemon.runtime import RUNTIME
from tests.conftest import basic, bearer, fixture


def sign(body: bytes, secret: str = "s3cret") -> str:
    return hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()


async def post(client: Any, payload: Any, headers: dict[str, str] | None = None) -> Any:
    return await client.post("/v1/segment", data=json.dumps(payload),
                             headers={"Content-Type": "application/json",
                                      **(headers if headers is not None else basic())})


async def user(client: Any, user_id: str) -> Any:
    response = await client.get(f"/v1/users/{user_id}", headers=bearer())
    return response.status, (await response.json())


async def test_every_message_type_is_accepted(make_client: Any) -> None:
    client = await make_client()
    names = ["identify", "group", "track", "page", "screen", "alias", "delete"]
    for name in names:
        response = await post(client, fixture(name))
        assert response.status == 200, (name, await response.text())
        body = await response.json()
        assert body == {"accepted": 1, "duplicates": 0, "rejected": []}, name


async def test_seed_examples_build_the_book(make_client: Any) -> None:
    client = await make_client()
    for name in ["identify", "group", "track"]:
        assert (await post(client, fixture(name))).status == 200
    status, body = await user(client, "97980cfea0067")
    assert status == 200
    assert body["traits"]["email"] == "peter@example.com"
    assert body["traits"]["plan"] == "premium"
    assert body["accounts"] == [{"groupId": "0e8c78ea9d97a7b8185e8632"}]
    assert "3d316d2c-26e8-451f-91be-a0766708c81e" in body["aliases"]
    assert body["activity"]["events"] == 1 and body["activity"]["sessions"] == 1
    account = await (await client.get("/v1/accounts/0e8c78ea9d97a7b8185e8632",
                                      headers=bearer())).json()
    assert account["traits"]["name"] == "Initech" and account["traits"]["employees"] == 329
    assert account["members"] == ["97980cfea0067"]


async def test_redelivery_counts_as_duplicate_and_changes_nothing(make_client: Any) -> None:
    client = await make_client()
    message = fixture("track")
    assert (await (await post(client, message)).json())["accepted"] == 1
    again = await (await post(client, [message, message])).json()
    assert again == {"accepted": 0, "duplicates": 2, "rejected": []}
    _, body = await user(client, "97980cfea0067")
    assert body["activity"]["events"] == 1


async def test_older_identify_never_overwrites_newer_trait(make_client: Any) -> None:
    client = await make_client()
    newer = {"type": "identify", "userId": "u1", "messageId": "m-new",
             "timestamp": "2025-01-02T00:00:00Z", "traits": {"plan": "pro", "email": "a@x.io"}}
    older = {"type": "identify", "userId": "u1", "messageId": "m-old",
             "timestamp": "2025-01-01T00:00:00Z", "traits": {"plan": "free", "seats": 3}}
    await post(client, newer)
    await post(client, older)
    _, body = await user(client, "u1")
    assert body["traits"]["plan"] == "pro"
    assert body["traits"]["seats"] == 3  # a trait only the older call set is still kept


async def test_batch_shapes_and_per_message_rejections(make_client: Any) -> None:
    client = await make_client()
    good = fixture("identify")
    bad = {"type": "track", "event": "x", "messageId": "no-ids"}
    unknown = {"type": "teleport", "userId": "u", "messageId": "t1"}
    for body in ([good, bad, unknown], {"batch": [good, bad, unknown]}):
        response = await post(client, body)
        assert response.status == 200
        result = await response.json()
        assert [r["index"] for r in result["rejected"]] == [1, 2]
        assert "userId" in result["rejected"][0]["message"]
    array = fixture("actions_batch_array")
    result = await (await post(client, array)).json()
    assert result["accepted"] + result["duplicates"] == len(array)


async def test_camel_and_snake_case_and_action(make_client: Any) -> None:
    client = await make_client()
    snake = {"type": "identify", "user_id": "snake1", "message_id": "s-1",
             "traits": {"email": "s@x.io", "first_name": "Sam", "created_at": "2025-01-01"}}
    assert (await (await post(client, snake)).json())["accepted"] == 1
    _, body = await user(client, "snake1")
    assert body["firstName"] == "Sam" and body["createdAt"].startswith("2025-01-01")
    calixa = fixture("calixa_seed_track")
    assert (await post(client, calixa)).status == 200
    account = await (await client.get("/v1/accounts/acct_123", headers=bearer())).json()
    assert account["traits"]["name"] == "Initech"


async def test_gzip_body(make_client: Any) -> None:
    client = await make_client()
    body = gzip.compress(json.dumps(fixture("identify")).encode())
    response = await client.post("/v1/segment", data=body, headers={
        **basic(), "Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert response.status == 200 and (await response.json())["accepted"] == 1


async def test_auth_schemes(make_client: Any) -> None:
    client = await make_client()
    raw = json.dumps(fixture("identify")).encode()
    json_type = {"Content-Type": "application/json"}
    # Basic with the API key; the password part is ignored.
    assert (await client.post("/v1/segment", data=raw, headers={**json_type, **basic()})
            ).status == 200
    for headers in ({"X-Segment-Signature": sign(raw)}, {"X-Signature": sign(raw)},
                    {"X-Segment-Signature": sign(raw, "n3w-s3cret")}):
        response = await client.post("/v1/segment", data=raw, headers={**json_type, **headers})
        assert response.status == 200, headers
    for headers in ({}, basic("wrong"), {"X-Segment-Signature": sign(raw, "nope")},
                    {"X-Signature": "zz"}):
        response = await client.post("/v1/segment", data=raw, headers={**json_type, **headers})
        assert response.status == 401
        assert (await response.json())["message"]


async def test_signature_covers_the_whole_batch(make_client: Any) -> None:
    client = await make_client()
    batch = fixture("actions_batch_array")
    signed = json.dumps(batch).encode()
    signature = sign(signed)
    batch[1]["traits"] = {"email": "attacker@evil.example"}
    altered = json.dumps(batch).encode()
    headers = {"Content-Type": "application/json", "X-Segment-Signature": signature}
    assert (await client.post("/v1/segment", data=altered, headers=headers)).status == 401
    assert (await client.post("/v1/segment", data=signed, headers=headers)).status == 200


async def test_array_under_legacy_header_is_refused_with_advice(make_client: Any) -> None:
    client = await make_client()
    batch = fixture("actions_batch_array")
    raw = json.dumps(batch).encode()
    first = json.dumps(batch[0]).encode()
    for signature in (sign(raw), sign(first)):
        response = await client.post("/v1/segment", data=raw, headers={
            "Content-Type": "application/json", "X-Signature": signature})
        assert response.status == 401
        assert "X-Segment-Signature" in (await response.json())["message"]


async def test_rejection_paths(make_client: Any) -> None:
    client = await make_client(intake={"max_body_bytes": 64 * 1024})
    json_type = {"Content-Type": "application/json", **basic()}
    cases: list[tuple[bytes, dict[str, str], int]] = [
        (b"{not json", json_type, 400),
        (b"", json_type, 400),
        (b"\xff\xfe", json_type, 400),
        (json.dumps(fixture("identify")).encode(), {**basic(), "Content-Type": "text/csv"}, 415),
        (json.dumps({"type": "identify", "traits": {}}).encode(), json_type, 400),
        (json.dumps({"type": "teleport", "userId": "u"}).encode(), json_type, 501),
        (json.dumps({"userId": "u"}).encode(), json_type, 400),
        (json.dumps({"type": "track", "userId": "u", "event": "x" * 10,
                     "properties": {"blob": "y" * 40000}}).encode(), json_type, 400),
        (b"[" + b",".join([json.dumps(fixture("track")).encode()] * 400) + b"]", json_type, 413),
    ]
    for body, headers, status in cases:
        response = await client.post("/v1/segment", data=body, headers=headers)
        assert response.status == status, (body[:60], await response.text())
        assert "message" in await response.json()


async def test_oversize_message_inside_batch_is_rejected_alone(make_client: Any) -> None:
    client = await make_client()
    big = {"type": "track", "userId": "u", "event": "Big", "messageId": "big",
           "properties": {"blob": "y" * 40000}}
    result = await (await post(client, [fixture("track"), big])).json()
    assert result["accepted"] == 1
    assert result["rejected"] == [{"index": 1, "message": "message is larger than 32 KB"}]


async def test_b2b_events(make_client: Any) -> None:
    client = await make_client()
    await post(client, fixture("b2b_signed_up"))
    await post(client, fixture("b2b_account_created"))
    _, body = await user(client, "019mr8mf4r")
    assert body["traits"]["email"] == "peter@initech.example"
    assert body["accounts"] == [{"groupId": "acct_123"}]
    account = await (await client.get("/v1/accounts/acct_123", headers=bearer())).json()
    assert account["traits"]["name"] == "Initech"
    removed = fixture("b2b_account_removed_user")
    removed["timestamp"] = "2025-01-01T12:00:01.000Z"
    await post(client, removed)
    account = await (await client.get("/v1/accounts/acct_123", headers=bearer())).json()
    assert account["members"] == []
    added = fixture("b2b_account_added_user")
    added["timestamp"] = "2025-01-01T12:00:02.000Z"
    await post(client, added)
    account = await (await client.get("/v1/accounts/acct_123", headers=bearer())).json()
    assert account["members"] == ["019mr8mf4r"]
    deleted = fixture("b2b_account_deleted")
    deleted["timestamp"] = "2025-01-01T12:00:03.000Z"
    await post(client, deleted)
    account = await (await client.get("/v1/accounts/acct_123", headers=bearer())).json()
    assert account["members"] == [] and account["deleted"] is True
    _, body = await user(client, "019mr8mf4r")
    assert body["accounts"] == []


def _group(user_id: str, group_id: str, second: int) -> dict[str, Any]:
    return {"type": "group", "userId": user_id, "groupId": group_id,
            "messageId": f"g-{user_id}-{group_id}-{second}",
            "timestamp": f"2025-01-01T00:00:{second:02d}Z", "traits": {"name": group_id}}


async def test_users_may_belong_to_many_accounts_by_default(make_client: Any) -> None:
    client = await make_client()
    await post(client, [_group("u1", "a", 1), _group("u1", "b", 2)])
    _, body = await user(client, "u1")
    assert body["accounts"] == [{"groupId": "a"}, {"groupId": "b"}]


async def test_one_account_per_user_moves_the_user(make_client: Any) -> None:
    client = await make_client(accounts={"one_account_per_user": True})
    await post(client, _group("u1", "a", 1))
    await post(client, _group("u1", "b", 2))
    await post(client, _group("u1", "a", 0))  # an older link arriving late does not win
    _, body = await user(client, "u1")
    assert body["accounts"] == [{"groupId": "b"}]


async def test_activity_before_group_call_is_attributed(make_client: Any) -> None:
    client = await make_client()
    track = {"type": "track", "userId": "u9", "event": "Clicked", "messageId": "t9",
             "timestamp": "2025-01-01T00:00:00Z"}
    await post(client, track)
    await post(client, _group("u9", "acme", 5))
    account = await (await client.get("/v1/accounts/acme", headers=bearer())).json()
    assert account["activity"]["events"] == 1


async def test_sessions_follow_the_inactivity_timeout(make_client: Any) -> None:
    client = await make_client(accounts={"session_timeout": "30m"})
    times = ["00:00", "00:10", "00:35", "02:00", "02:05"]
    await post(client, [{"type": "page", "userId": "s1", "messageId": f"p{i}",
                         "timestamp": f"2025-01-01T{t}:00Z"} for i, t in enumerate(times)])
    _, body = await user(client, "s1")
    assert body["activity"]["events"] == 5 and body["activity"]["sessions"] == 2
    assert body["activity"]["first_seen"].startswith("2025-01-01T00:00")


async def test_alias_merges_previous_id(make_client: Any) -> None:
    client = await make_client()
    await post(client, {"type": "identify", "userId": "97980cfea0067", "messageId": "i1",
                        "traits": {"email": "p@x.io", "plan": "free"}})
    await post(client, {"type": "track", "userId": "97980cfea0067", "event": "A",
                        "messageId": "t1"})
    await post(client, fixture("alias"))
    # The old id still finds the person: it now names the merged user.
    status, old = await user(client, "97980cfea0067")
    assert status == 200 and old["userId"] == "507f191e81", old
    merged_status, body = await user(client, "507f191e81")
    assert merged_status == 200 and body["userId"] == "507f191e81"
    assert old == body
    assert body["traits"]["email"] == "p@x.io"
    assert "97980cfea0067" in body["aliases"]
    assert body["activity"]["events"] == 1
    # Later events sent under the old id land on the merged user.
    await post(client, {"type": "track", "userId": "97980cfea0067", "event": "B",
                        "messageId": "t2"})
    _, body = await user(client, "507f191e81")
    assert body["activity"]["events"] == 2


async def test_delete_erases_and_suppresses(make_client: Any) -> None:
    client = await make_client(survey={"max_delay": 0})
    await post(client, {"type": "identify", "userId": "507f191e81", "messageId": "d1",
                        "traits": {"email": "gone@x.io"}})
    status, body = await user(client, "507f191e81")
    assert status == 200 and body["surveys"][0]["state"] == "pending"
    await post(client, fixture("delete"))
    status, _ = await user(client, "507f191e81")
    assert status == 404
    await post(client, {"type": "identify", "userId": "507f191e81", "messageId": "d2",
                        "traits": {"email": "gone@x.io"}})
    status, _ = await user(client, "507f191e81")
    assert status == 404  # suppressed: later events do not bring the person back
    again = await (await post(client, fixture("delete"))).json()
    assert again["duplicates"] == 1  # a redelivered deletion request is recognised


async def test_read_api_needs_the_admin_token(make_client: Any) -> None:
    client = await make_client()
    await post(client, fixture("identify"))
    for headers in ({}, {"Authorization": "Bearer wrong"}, basic()):
        response = await client.get("/v1/users/97980cfea0067", headers=headers)
        assert response.status == 401
    assert (await client.get("/v1/users/nobody", headers=bearer())).status == 404
    assert (await client.get("/v1/accounts/nothing", headers=bearer())).status == 404


async def test_null_fields_count_as_absent(make_client: Any) -> None:
    client = await make_client()
    message = {"type": "track", "userId": "n1", "anonymousId": None, "context": None,
               "event": "Null Test", "messageId": "n-1", "properties": None}
    assert (await (await post(client, message)).json())["accepted"] == 1


async def test_other_writers_get_their_turn_under_continuous_intake(make_client: Any) -> None:
    """The intake's writer takes group after group while requests keep coming; dispatch and
    answers write through the same connection and must not wait for the load to stop."""
    client = await make_client()
    runtime = client.server.app[RUNTIME]
    stop = asyncio.Event()
    sent = 0

    async def sender(n: int) -> None:
        nonlocal sent
        i = 0
        while not stop.is_set():
            batch = [{"type": "track", "userId": f"u{j % 50}", "event": "Opened",
                      "messageId": f"load-{n}-{i}-{j}"} for j in range(100)]
            async with client.post("/v1/segment", json=batch, headers=basic()) as resp:
                assert resp.status == 200
            sent += 1
            i += 1

    # More waiting than one group takes (2,000 messages): the writer never runs dry.
    senders = [asyncio.create_task(sender(n)) for n in range(32)]
    try:
        async with asyncio.timeout(30):
            while sent < 20:  # the load is on
                assert not any(t.done() for t in senders), "a sender failed"
                await asyncio.sleep(0.01)
        before = sent
        # Starved, these would wait for the load to end, which it never does: the timeout.
        async with asyncio.timeout(30):
            for k in range(20):
                async with runtime.store.db.write() as conn:
                    await conn.execute(sa.text("UPDATE sync_state SET last_sent = :k"), {"k": k})
                await asyncio.sleep(0.01)
        assert sent > before, "intake stood still while the other writer ran"
        assert not any(t.done() for t in senders), "a sender failed"
    finally:
        stop.set()
        await asyncio.gather(*senders)


async def test_concurrent_single_messages_share_commits(make_client: Any) -> None:
    """Single-message requests that arrive together are committed together (one fsync for
    many), and each is answered after its group committed: every answer is in the book."""
    client = await make_client()
    commits = client.server.app[RUNTIME].metrics.commit_seconds

    def commit_count() -> float:
        samples = {s.name: s.value for m in commits.collect() for s in m.samples}
        return samples["npsd_intake_commit_seconds_count"]

    before = commit_count()
    n = 32
    responses = await asyncio.gather(*(
        post(client, {"type": "track", "userId": f"together-{i}", "event": "Opened",
                      "messageId": f"together-{i}"}) for i in range(n)))
    assert [r.status for r in responses] == [200] * n
    assert [(await r.json())["accepted"] for r in responses] == [1] * n
    groups = commit_count() - before
    assert 1 <= groups <= n // 4, f"{n} concurrent requests took {groups:.0f} commits"
    for i in range(n):
        status, body = await user(client, f"together-{i}")
        assert status == 200 and body["activity"]["events"] == 1, body


async def test_a_timestamp_far_in_the_future_cannot_pin_a_trait(make_client: Any) -> None:
    """`9998-12-31` would make this email win over every later identify for ever."""
    from structlog.testing import capture_logs

    client = await make_client()
    with capture_logs() as logs:
        response = await post(client, [
            {"type": "identify", "userId": "pin", "messageId": "f1",
             "timestamp": "9998-12-31T00:00:00Z", "traits": {"email": "attacker@x.io"}},
            {"type": "track", "userId": "pin", "messageId": "f2", "event": "E",
             "timestamp": "9998-12-31T00:00:00Z"}])
    assert (await response.json())["accepted"] == 2
    [line] = [e for e in logs if e["event"] == "intake.future_timestamp"]
    assert line["messages"] == 2 and "pin" not in str(line)
    await post(client, {"type": "identify", "userId": "pin", "messageId": "f3",
                        "traits": {"email": "owner@x.io"}})
    _, body = await user(client, "pin")
    assert body["email"] == "owner@x.io"
    assert not body["activity"]["last_seen"].startswith("9998")
    # The Tracking API door too (with and without sentAt's clock-skew correction).
    for n, extra in enumerate(({}, {"sentAt": "9998-12-31T00:00:01Z"})):
        tracked = await client.post("/v1/identify", json={
            "userId": "pin2", "messageId": f"t{n}", "timestamp": "9998-12-31T00:00:00Z",
            "traits": {"email": f"attacker{n}@x.io"}, **extra}, headers=basic())
        assert tracked.status == 200
    await post(client, {"type": "identify", "userId": "pin2", "messageId": "f4",
                        "traits": {"email": "owner2@x.io"}})
    _, body = await user(client, "pin2")
    assert body["email"] == "owner2@x.io"


async def test_a_group_naming_no_one_writes_the_account(make_client: Any) -> None:
    """The Calixa page's own example: a group call without userId or anonymousId, on both
    intake doors."""
    client = await make_client()
    response = await post(client, {"type": "group", "groupId": "calixa-co", "messageId": "g1",
                                   "traits": {"name": "Calixa", "plan": "pro"}})
    assert response.status == 200 and (await response.json())["accepted"] == 1
    tracked = await client.post("/v1/group", json={"groupId": "tracked-co", "traits": {
        "name": "Tracked"}}, headers=basic())
    assert tracked.status == 200, await tracked.text()
    for group_id, name in (("calixa-co", "Calixa"), ("tracked-co", "Tracked")):
        account = await client.get(f"/v1/accounts/{group_id}", headers=bearer())
        body = await account.json()
        assert account.status == 200 and body["traits"]["name"] == name
        assert body["members"] == []
    status, _ = await user(client, "calixa-co")
    assert status == 404  # nobody was created for it
