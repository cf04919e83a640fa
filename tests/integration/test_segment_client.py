"""SegmentClient against FakeSegment over real loopback HTTP.

Backoff sleeps go through an injected recorder, so retry tests are fast and can assert
the delays the client chose; only the timeout test spends real (sub-second) time.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import aiohttp
import pytest
from structlog.testing import capture_logs

from jobs.segment_client import (
    RetryPolicy,
    SegmentClient,
    SegmentSendAborted,
    backoff_s,
    parse_retry_after,
)
from jobs.sync_batching import Encoded, batches, dumps, encoded, fit_message, message_id
from tests.fakes.segment_api import FakeSegment

WRITE_KEY = "wk-test"
WAIT_S = 10.0  # bound on every await in these tests
SENT_AT = "2024-05-01T03:00:00+00:00"
T = TypeVar("T")


async def within(aw: Awaitable[T]) -> T:
    async with asyncio.timeout(WAIT_S):
        return await aw


class Sleeps:
    """Stands in for asyncio.sleep: records the delay, runs an optional hook, returns."""

    def __init__(self, hook: Callable[[], Awaitable[None]] | None = None) -> None:
        self.delays: list[float] = []
        self.hook = hook

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        if self.hook is not None:
            await self.hook()


def identify(n: int, comment: str = "") -> dict[str, Any]:
    return {
        "type": "identify",
        "messageId": message_id("identify", f"user-{n}", "answer-1"),
        "userId": f"user-{n}",
        "traits": {"NPS_rating": n % 11, "NPS_comment": comment, "NPS_date": SENT_AT},
    }


def ids(messages: list[dict[str, Any]]) -> list[str]:
    return [m["messageId"] for m in messages]


@pytest.fixture
async def seg() -> AsyncIterator[FakeSegment]:
    async with FakeSegment(WRITE_KEY) as fake:
        yield fake


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def make_client(
    session: aiohttp.ClientSession,
    seg: FakeSegment,
    sleeps: Sleeps,
    *,
    write_key: str = WRITE_KEY,
    **policy: Any,
) -> SegmentClient:
    return SegmentClient(
        session,
        seg.url,
        write_key,
        RetryPolicy(**{"timeout_s": 5.0, **policy}),
        sleeps,
        rand=lambda: 0.5,
    )


# -- pure retry rules -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "rand", "expected"),
    [
        (0, 1.0, 0.5),
        (1, 1.0, 1.0),
        (3, 0.5, 2.0),
        (7, 1.0, 60.0),  # 0.5 * 128 = 64, capped at 60
        (10_000, 1.0, 60.0),  # no overflow however long the outage
        (5, 0.0, 0.0),  # full jitter reaches zero
    ],
)
def test_backoff_is_capped_full_jitter(attempt: int, rand: float, expected: float) -> None:
    assert backoff_s(attempt, RetryPolicy(), lambda: rand) == expected


NOW = datetime(2024, 5, 1, 3, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("7", 7.0),
        (" 2.5 ", 2.5),
        ("-3", 0.0),
        ("Wed, 01 May 2024 03:00:30 GMT", 30.0),
        ("Wed, 01 May 2024 02:59:00 GMT", 0.0),  # already past
        ("soon", None),
        ("nan", None),
        ("", None),
    ],
)
def test_parse_retry_after(value: str, expected: float | None) -> None:
    assert parse_retry_after(value, NOW) == expected



def wire(messages: list[dict[str, Any]]) -> list[bytes]:
    """The messages as the syncer hands them to the client: serialised once."""
    return [dumps(m) for m in messages]


def enc(messages: list[dict[str, Any]]) -> list[Encoded]:
    return [encoded(m) for m in messages]


def tags(items: list[Encoded]) -> list[Any]:
    return [e.tag for e in items]


def untag(result: tuple[list[Encoded], list[tuple[Encoded, str]]]
          ) -> tuple[list[Any], list[tuple[Any, str]]]:
    delivered, rejected = result
    return tags(delivered), [(e.tag, reason) for e, reason in rejected]

# -- the client over HTTP -----------------------------------------------------------------


async def test_happy_path(seg: FakeSegment, session: aiohttp.ClientSession, sleeps: Sleeps) -> None:
    messages = [identify(n) for n in range(3)]
    result = await within(make_client(session, seg, sleeps).send_batch(wire(messages), SENT_AT))
    assert (result.status, result.http_status, result.attempts) == ("ok", 200, 1)
    assert seg.batches == [messages]
    assert seg.requests == 1
    assert sleeps.delays == []


async def test_wrong_write_key_is_unauthorized_and_not_retried(
    seg: FakeSegment, session: aiohttp.ClientSession, sleeps: Sleeps
) -> None:
    client = make_client(session, seg, sleeps, write_key="not-the-key")
    messages = [identify(n) for n in range(4)]
    result = await within(client.send_batch(wire(messages)))
    assert (result.status, result.http_status, result.attempts) == ("unauthorized", 401, 1)

    with pytest.raises(SegmentSendAborted) as aborted:
        await within(client.send_isolating(enc(messages)))
    assert aborted.value.result.status == "unauthorized"
    assert tags(aborted.value.pending) == messages
    assert seg.requests == 2  # one per call: no retry, no split
    assert seg.messages == []
    assert sleeps.delays == []


@pytest.mark.parametrize(("retry_after", "expected_delay"), [(7, 7.0), (120, 60.0)])
async def test_429_honours_retry_after_within_the_cap(
    seg: FakeSegment,
    session: aiohttp.ClientSession,
    sleeps: Sleeps,
    retry_after: float,
    expected_delay: float,
) -> None:
    seg.fail_next(429, retry_after=retry_after)
    result = await within(make_client(session, seg, sleeps).send_batch(wire([identify(1)])))
    assert (result.status, result.attempts) == ("ok", 2)
    # Backoff alone would be 0.5 * 0.5 = 0.25 s; the server asked for longer.
    assert sleeps.delays == [expected_delay]


async def test_500_storm_then_success(
    seg: FakeSegment, session: aiohttp.ClientSession, sleeps: Sleeps
) -> None:
    seg.fail_next(500, count=5)
    messages = [identify(n) for n in range(5)]
    result = await within(make_client(session, seg, sleeps).send_batch(wire(messages)))
    assert (result.status, result.attempts) == ("ok", 6)
    assert seg.requests == 6
    assert sleeps.delays == [0.5 * 0.5 * 2**i for i in range(5)]
    assert seg.messages == messages


async def test_dropped_connection_then_success(
    seg: FakeSegment, session: aiohttp.ClientSession, sleeps: Sleeps
) -> None:
    seg.drop_next()
    messages = [identify(n) for n in range(2)]
    result = await within(make_client(session, seg, sleeps).send_batch(wire(messages)))
    assert (result.status, result.attempts) == ("ok", 2)
    assert seg.messages == messages  # the dropped request was never recorded
    assert len(sleeps.delays) == 1


async def test_slow_answer_times_out_then_success_and_ids_make_it_idempotent(
    seg: FakeSegment, session: aiohttp.ClientSession, sleeps: Sleeps
) -> None:
    seg.slow_next(1.0)
    messages = [identify(n) for n in range(3)]
    client = make_client(session, seg, sleeps, timeout_s=0.2)
    result = await within(client.send_batch(wire(messages)))
    assert (result.status, result.attempts) == ("ok", 2)
    # Segment got the first copy before the client gave up on it; the same messageIds
    # are what let it drop the second.
    assert seg.duplicates() == ids(messages)
    assert set(seg.by_message_id()) == set(ids(messages))


async def test_server_down_then_back(seg: FakeSegment, session: aiohttp.ClientSession) -> None:
    await within(seg.down())
    sleeps = Sleeps(hook=seg.up)  # the outage ends during the first backoff
    result = await within(make_client(session, seg, sleeps).send_batch(wire([identify(1)])))
    assert (result.status, result.attempts) == ("ok", 2)
    assert seg.requests == 1


async def test_gives_up_after_max_attempts(
    seg: FakeSegment, session: aiohttp.ClientSession, sleeps: Sleeps
) -> None:
    seg.fail_next(503, count=100)
    client = make_client(session, seg, sleeps, max_attempts=4)
    with capture_logs() as logs:
        result = await within(client.send_batch(wire([identify(1)])))
    assert (result.status, result.http_status, result.attempts) == ("gave_up", 503, 4)
    assert seg.requests == 4
    assert len(sleeps.delays) == 3  # no sleep after the last attempt
    events = [entry["event"] for entry in logs]
    assert events == ["sync.batch_retrying"] * 3 + ["sync.batch_gave_up"]


async def test_isolating_finds_the_one_bad_message(
    seg: FakeSegment, session: aiohttp.ClientSession, sleeps: Sleeps
) -> None:
    messages = [identify(n) for n in range(10)]
    bad = messages[6]
    seg.reject_message_ids = {bad["messageId"]}
    client = make_client(session, seg, sleeps)
    delivered, rejected = untag(await within(client.send_isolating(enc(messages), SENT_AT)))
    assert delivered == [m for m in messages if m is not bad]  # in order
    assert [m for m, _ in rejected] == [bad]
    assert bad["messageId"] in rejected[0][1]  # Segment's reason comes through
    assert sorted(seg.by_message_id()) == sorted(ids(delivered))
    assert seg.duplicates() == []
    assert sleeps.delays == []  # a 400 is not retried


async def test_isolating_several_bad_messages(
    seg: FakeSegment, session: aiohttp.ClientSession, sleeps: Sleeps
) -> None:
    messages = [identify(n) for n in range(16)]
    seg.reject_message_ids = {messages[0]["messageId"], messages[15]["messageId"]}
    client = make_client(session, seg, sleeps)
    delivered, rejected = untag(await within(client.send_isolating(enc(messages))))
    assert ids(delivered) == ids(messages[1:15])
    assert [m for m, _ in rejected] == [messages[0], messages[15]]


async def test_isolating_stops_with_its_progress_when_segment_stays_down(
    seg: FakeSegment, session: aiohttp.ClientSession, sleeps: Sleeps
) -> None:
    messages = [identify(n) for n in range(4)]
    seg.fail_next(400)  # the whole batch: split into [0, 1] and [2, 3]
    seg.pass_next()  # [0, 1] is delivered
    seg.fail_next(503, count=10)  # then Segment is down for longer than the policy waits
    client = make_client(session, seg, sleeps, max_attempts=2)
    with pytest.raises(SegmentSendAborted) as aborted:
        await within(client.send_isolating(enc(messages)))
    assert aborted.value.result.status == "gave_up"
    assert tags(aborted.value.delivered) == messages[:2]
    assert aborted.value.rejected == []
    assert tags(aborted.value.pending) == messages[2:]  # nothing wrongly marked as rejected
    assert seg.requests == 4


# -- the fake's own limits, posted raw ------------------------------------------------------


async def post_raw(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    *,
    key: str = WRITE_KEY,
    content_type: str = "application/json",
    gzipped: bool = False,
) -> int:
    token = base64.b64encode(f"{key}:".encode()).decode()
    headers = {"Authorization": f"Basic {token}", "Content-Type": content_type}
    if gzipped:
        headers["Content-Encoding"] = "gzip"
        body = gzip.compress(body)
    async with session.post(url, data=body, headers=headers) as response:
        await response.read()
        return response.status


def batch_body(messages: list[dict[str, Any]]) -> bytes:
    return dumps({"batch": messages, "sentAt": SENT_AT})


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("2500 messages", 200),
        ("2501 messages", 400),
        ("message over 32 KB", 400),
        ("message of exactly 32 KB", 200),
        ("body over 500 KB", 400),
        ("no messageId", 400),
        ("no userId or anonymousId", 400),
        ("anonymousId only", 200),
        ("bad type", 400),
        ("wrong key", 401),
        ("text/plain", 400),
        ("gzip", 200),
        ("not JSON", 400),
    ],
)
async def test_fake_enforces_segment_limits(
    seg: FakeSegment, session: aiohttp.ClientSession, case: str, expected: int
) -> None:
    url = f"{seg.url}/batch"
    one = identify(1)
    kwargs: dict[str, Any] = {}
    body = batch_body([one])
    if case.endswith(" messages"):
        body = batch_body([identify(n) for n in range(int(case.split()[0]))])
    elif case == "message over 32 KB":
        body = batch_body([identify(1, "x" * 33_000)])
    elif case == "message of exactly 32 KB":
        padded = identify(1)
        padded["traits"]["NPS_comment"] = "x" * (32 * 1024 - len(dumps(padded)))
        assert len(dumps(padded)) == 32 * 1024
        body = batch_body([padded])
    elif case == "body over 500 KB":
        body = batch_body([identify(n, "x" * 30_000) for n in range(20)])
    elif case == "no messageId":
        body = batch_body([{k: v for k, v in one.items() if k != "messageId"}])
    elif case == "no userId or anonymousId":
        body = batch_body([{k: v for k, v in one.items() if k != "userId"}])
    elif case == "anonymousId only":
        anonymous = {k: v for k, v in one.items() if k != "userId"}
        body = batch_body([{**anonymous, "anonymousId": "anon-1"}])
    elif case == "bad type":
        body = batch_body([{**one, "type": "shout"}])
    elif case == "wrong key":
        kwargs["key"] = "nope"
    elif case == "text/plain":
        kwargs["content_type"] = "text/plain"
    elif case == "gzip":
        kwargs["gzipped"] = True
    elif case == "not JSON":
        body = b"{batch"
    status = await within(post_raw(session, url, body, **kwargs))
    assert status == expected
    assert seg.requests == 1
    assert len(seg.batches) == (1 if expected == 200 else 0)


async def test_fake_accepts_single_message_endpoints(
    seg: FakeSegment, session: aiohttp.ClientSession
) -> None:
    message = {k: v for k, v in identify(1).items() if k != "type"}
    assert await within(post_raw(session, f"{seg.url}/identify", dumps(message))) == 200
    assert seg.messages == [{**message, "type": "identify"}]


# -- the whole path: shape, pack, send ------------------------------------------------------


async def test_fitted_and_packed_messages_all_pass_the_limits(
    seg: FakeSegment, session: aiohttp.ClientSession, sleeps: Sleeps
) -> None:
    long_comment = "très long commentaire 😀 " * 3_000  # ~80 KB
    messages = [
        fit_message(identify(n, long_comment if n % 50 == 0 else "ok")) for n in range(3_000)
    ]
    client = make_client(session, seg, sleeps)
    for batch in batches(messages):
        result = await within(client.send_batch(wire(batch), SENT_AT))
        assert result.ok, result
    assert ids(seg.messages) == ids(messages)
    assert seg.duplicates() == []
    assert all(len(b) <= 2_500 for b in seg.batches)
