"""The survey engine on a moved clock: Callexa's delays, dispatch through a real SMTP server,
the survey page, answers, unsubscribe, reminders, expiry — and never a second email."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from daemon.runtime import RUNTIME
from jobs.clock import MovableClock
from jobs.dispatch import Dispatcher
from jobs.email import EmailBackend, HandoffRefused, make_backend
from jobs.housekeeping import housekeeping
from storage.sqlutil import SURVEYS
from tests.conftest import basic, bearer
from tests.fakes.smtp_sink import SmtpSink

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a Monday


class Engine:
    def __init__(self, client: Any, clock: MovableClock, sink: SmtpSink) -> None:
        self.client, self.clock, self.sink = client, clock, sink
        runtime = client.server.app[RUNTIME]
        self.runtime = runtime
        self.backend: EmailBackend = make_backend(runtime.settings.email)
        self.dispatcher = Dispatcher(runtime.store, clock, runtime.owner, lambda: runtime.settings,
                                     lambda: self.backend)
        self.n = 0

    async def identify(self, user_id: str, **traits: Any) -> None:
        self.n += 1
        message = {"type": "identify", "userId": user_id, "messageId": f"{user_id}-{self.n}",
                   "timestamp": self.clock.now().isoformat(), "traits": traits}
        await self.post(message)

    async def post(self, message: Any) -> Any:
        response = await self.client.post("/v1/segment", json=message, headers=basic())
        assert response.status == 200, await response.text()
        return await response.json()

    async def user(self, user_id: str) -> Any:
        response = await self.client.get(f"/v1/users/{user_id}", headers=bearer())
        assert response.status == 200
        return await response.json()

    async def decisions(self, user_id: str) -> list[str]:
        response = await self.client.get(f"/v1/users/{user_id}/decisions", headers=bearer())
        return [d["reason"] for d in (await response.json())["decisions"]]

    async def dispatch(self) -> int:
        return await self.dispatcher.run_once()

    def token_of(self, index: int = -1) -> str:
        body = self.sink.messages[index].get_body(("plain",))
        assert body is not None
        match = re.search(r"/s/([A-Za-z0-9_-]+)\?score=", body.get_content())
        assert match is not None
        return match.group(1)


@pytest.fixture
async def engine_factory(make_client: Any, clock: MovableClock) -> AsyncIterator[Any]:
    engines: list[Engine] = []
    async with SmtpSink() as sink:
        async def start(**sections: Any) -> Engine:
            clock.set(NOW)
            smtp = {"host": sink.host, "port": sink.port, "security": "none"}
            email = {"backend": "smtp", "smtp": smtp}
            client = await make_client(email=email, **sections)
            engine = Engine(client, clock, sink)
            engines.append(engine)
            return engine

        yield start
        for engine in engines:
            await engine.backend.close()


async def test_callexa_delay_one_email_then_answer(engine_factory: Any) -> None:
    e = await engine_factory()
    created = NOW - timedelta(days=1)
    await e.identify("u1", email="peter@example.com", firstName="Peter",
                     createdAt=created.isoformat())
    user = await e.user("u1")
    assert user["surveys"][0]["state"] == "pending"
    assert user["surveys"][0]["due_at"].startswith("2026-03-04T10:00")  # createdAt + 3d
    assert await e.dispatch() == 0 and e.sink.count == 0
    e.clock.advance(timedelta(days=2, seconds=1))
    assert await e.dispatch() == 1
    [mail] = await e.sink.wait_for(1)
    assert "<peter@example.com>" in mail["To"] and mail["List-Unsubscribe-Post"]
    token = e.token_of()
    page = await e.client.get(f"/s/{token}?score=9")
    html = await page.text()
    assert page.status == 200
    assert re.search(r'value="9"[^>]*\bchecked', html)
    assert not re.search(r'value="8"[^>]*checked', html)
    assert (await e.user("u1"))["surveys"][0]["score"] is None  # GET records nothing
    answer = await e.client.post(f"/s/{token}", data={"score": "9", "comment": "<b>great</b>"})
    assert answer.status == 200
    survey = (await e.user("u1"))["surveys"][0]
    assert survey["state"] == "answered" and survey["score"] == 9
    assert survey["comment"] == "<b>great</b>"
    # Redelivery, more identifies and more dispatch runs send nothing more.
    for _ in range(10):
        await e.identify("u1", email="peter@example.com", createdAt=created.isoformat())
    e.clock.advance(timedelta(days=30))
    await e.dispatch()
    assert e.sink.count == 1
    nps = await (await e.client.get("/v1/nps", headers=bearer())).json()
    assert nps["promoters"] == 1 and nps["nps"] == 100.0 and nps["sent"] == 1


async def test_customer_older_than_max_delay_is_not_surveyed(engine_factory: Any) -> None:
    e = await engine_factory()
    await e.identify("old", email="o@x.io", createdAt=(NOW - timedelta(days=15)).isoformat())
    assert (await e.user("old"))["surveys"] == []
    reasons = await e.decisions("old")
    assert any("older than max_delay" in r for r in reasons)


async def test_no_email_no_survey(engine_factory: Any) -> None:
    e = await engine_factory(survey={"max_delay": 0})
    await e.identify("anon", plan="free")
    assert (await e.user("anon"))["surveys"] == []


async def test_max_delay_zero_resurveys_after_the_interval(engine_factory: Any) -> None:
    e = await engine_factory(survey={"max_delay": 0, "resurvey_interval": "26w"})
    await e.identify("r1", email="r@x.io")
    assert await e.dispatch() == 1
    e.clock.advance(timedelta(days=1))
    await e.identify("r1", email="r@x.io")
    surveys = (await e.user("r1"))["surveys"]
    assert len(surveys) == 2 and surveys[1]["state"] == "pending"
    assert surveys[1]["due_at"].startswith("2026-08-31T10:00")  # sent + 26 weeks
    await e.identify("r1", email="r@x.io")  # still one pending, never two
    assert len((await e.user("r1"))["surveys"]) == 2
    e.clock.advance(timedelta(weeks=26) - timedelta(days=1, seconds=1))
    assert await e.dispatch() == 0
    e.clock.advance(timedelta(seconds=2))
    assert await e.dispatch() == 1
    assert e.sink.count == 2


async def test_smtp_4xx_is_retried_and_sent_once(engine_factory: Any) -> None:
    e = await engine_factory(survey={"max_delay": 0})
    e.sink.fail_next(451, "4.7.1 try again later")
    await e.identify("t1", email="t@x.io")
    await e.dispatch()
    survey = (await e.user("t1"))["surveys"][0]
    assert survey["state"] == "pending" and "451" in survey["last_error"]
    e.clock.advance(timedelta(hours=2))
    await e.dispatch()
    assert (await e.user("t1"))["surveys"][0]["state"] == "sent"
    assert e.sink.count == 1


async def test_smtp_5xx_is_recorded_failed_and_blocks_nothing(engine_factory: Any) -> None:
    e = await engine_factory(survey={"max_delay": 0})
    e.sink.fail_next(550, "5.1.1 no such mailbox")
    await e.identify("f1", email="f@x.io")
    await e.dispatch()
    await e.identify("f2", email="g@x.io")
    await e.dispatch()
    failed = (await e.user("f1"))["surveys"][0]
    assert failed["state"] == "failed" and "550" in failed["last_error"]
    assert (await e.user("f2"))["surveys"][0]["state"] == "sent"
    e.clock.advance(timedelta(days=2))
    await e.dispatch()
    assert e.sink.count == 1


async def test_send_window_in_the_recipients_timezone(engine_factory: Any) -> None:
    e = await engine_factory(survey={"max_delay": 0, "send_window": "09:00-17:00"})
    # 10:00 UTC is 05:00 in New York: wait for 09:00 there (14:00 UTC in March before DST).
    await e.identify("w1", email="w@x.io", timezone="America/New_York")
    due = (await e.user("w1"))["surveys"][0]["due_at"]
    assert due.startswith("2026-03-02T14:00")
    await e.dispatch()
    assert e.sink.count == 0
    e.clock.set(datetime(2026, 3, 2, 14, 0, 1, tzinfo=UTC))
    assert await e.dispatch() == 1


async def test_unsubscribe_one_click(engine_factory: Any) -> None:
    e = await engine_factory(survey={"max_delay": 0, "resurvey_interval": "1d"})
    await e.identify("x1", email="x@x.io")
    await e.dispatch()
    token = e.token_of()
    assert (await e.client.get(f"/u/{token}")).status == 200
    assert (await e.user("x1"))["unsubscribed"] is False  # GET shows a button only
    response = await e.client.post(f"/u/{token}", data="List-Unsubscribe=One-Click",
                                   headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status == 200
    assert (await e.user("x1"))["unsubscribed"] is True
    e.clock.advance(timedelta(days=3))
    await e.identify("x1", email="x@x.io")
    await e.dispatch()
    assert e.sink.count == 1


async def test_reminder_once_and_link_expiry(engine_factory: Any) -> None:
    e = await engine_factory(survey={"max_delay": 0, "reminder_after": "3d",
                                     "response_window": "7d"})
    await e.identify("m1", email="m@x.io")
    await e.dispatch()
    e.clock.advance(timedelta(days=3, seconds=1))
    await e.dispatch()
    await e.dispatch()
    assert e.sink.count == 2 and e.sink.messages[1]["Subject"].startswith("Reminder")
    token = e.token_of(0)
    e.clock.advance(timedelta(days=5))
    assert (await e.client.get(f"/s/{token}")).status == 410
    assert (await e.client.post(f"/s/{token}", data={"score": "3"})).status == 410


async def test_unanswered_survey_expires_after_the_response_window(engine_factory: Any) -> None:
    """What an operator and the customer see when nobody answers: after response_window the
    survey is `expired` in the user's record, in /v1/status and in /metrics, and the link
    answers 410."""
    e = await engine_factory(survey={"max_delay": 0, "response_window": "7d"})
    await e.identify("late", email="late@x.io")
    assert await e.dispatch() == 1
    token = e.token_of()

    async def tidy() -> dict[str, int]:  # the housekeeping job, as npsd runs it every minute
        return await housekeeping(e.runtime.store, e.clock.now(), timedelta(days=7))

    # A minute's margin: the moved clock still runs in real time.
    e.clock.advance(timedelta(days=7) - timedelta(minutes=1))
    assert (await tidy())["expired"] == 0
    assert (await e.user("late"))["surveys"][0]["state"] == "sent"
    assert (await e.client.get(f"/s/{token}")).status == 200
    e.clock.advance(timedelta(minutes=2))
    assert (await tidy())["expired"] == 1
    survey = (await e.user("late"))["surveys"][0]
    assert survey["state"] == "expired" and survey["score"] is None
    status = await (await e.client.get("/v1/status", headers=bearer())).json()
    assert status["surveys"]["expired"] == 1 and status["surveys"]["sent"] == 0
    metrics = await (await e.client.get("/metrics")).text()
    assert 'npsd_surveys{state="expired"} 1.0' in metrics
    assert 'npsd_surveys{state="sent"} 0.0' in metrics
    assert (await e.client.get(f"/s/{token}")).status == 410
    assert (await e.client.post(f"/s/{token}", data={"score": "9"})).status == 410
    assert (await e.user("late"))["surveys"][0]["score"] is None
    assert await tidy() == {"expired": 0, "pruned": 0, "files": 0, "deliveries": 0}  # expired once


def set_sample_rate(e: Engine, rate: float) -> None:
    """What a reload (SIGHUP) with a new survey.sample_rate does: new settings for the next
    identify and the next dispatch run."""
    settings = e.runtime.settings
    e.runtime.settings = replace(settings, survey=replace(settings.survey, sample_rate=rate))


async def test_sample_rate_lowered_before_dispatch_skips_at_dispatch(
    engine_factory: Any,
) -> None:
    e = await engine_factory()  # sample_rate 1: everyone is scheduled
    users = [f"s{i}" for i in range(24)]
    for uid in users:
        await e.identify(uid, email=f"{uid}@x.io", createdAt=NOW.isoformat())
    for uid in users:
        assert (await e.user(uid))["surveys"][0]["state"] == "pending"
    set_sample_rate(e, 0.5)  # lowered between scheduling and the due time (createdAt+3d)
    e.clock.advance(timedelta(days=3, seconds=1))
    assert await e.dispatch() == len(users)
    states = {u: (await e.user(u))["surveys"][0]["state"] for u in users}
    skipped = [u for u, state in states.items() if state == "skipped"]
    sent = [u for u, state in states.items() if state == "sent"]
    assert len(skipped) + len(sent) == len(users), states
    assert 0 < len(skipped) < len(users), states  # about half: the userId's hash decides
    assert e.sink.count == len(sent)
    for uid in skipped:
        assert "skipped: not in the sample (sample_rate 0.5)" in await e.decisions(uid)
    # Identified again under the new rate, the same users are out of the sample: the
    # decision at identify agrees with the one at dispatch.
    for uid in users:
        await e.identify(uid, email=f"{uid}@x.io", createdAt=NOW.isoformat())
        last = (await e.decisions(uid))[-1]
        assert ("not in the sample" in last) == (uid in skipped), (uid, last)


async def test_answer_revision_and_bad_scores(engine_factory: Any) -> None:
    e = await engine_factory(survey={"max_delay": 0})
    await e.identify("a1", email="a@x.io")
    await e.dispatch()
    token = e.token_of()
    for bad in ("11", "-1", "abc", ""):
        assert (await e.client.post(f"/s/{token}", data={"score": bad})).status == 400
    assert (await e.client.post(f"/s/{token}", data={"score": "3"})).status == 200
    assert (await e.client.post(f"/s/{token}", data={"score": "8"})).status == 200
    survey = (await e.user("a1"))["surveys"][0]
    assert survey["score"] == 8
    assert (await e.client.get("/s/not-a-real-token")).status == 404


async def test_comment_is_escaped_on_the_page(engine_factory: Any) -> None:
    e = await engine_factory(survey={"max_delay": 0})
    await e.identify("c1", email="c@x.io")
    await e.dispatch()
    token = e.token_of()
    nul = await e.client.post(f"/s/{token}", data={"score": "5", "comment": "a\x00b"})
    assert nul.status == 200
    xss = "<script>alert(1)</script>"
    await e.client.post(f"/s/{token}", data={"score": "5", "comment": xss})
    html = await (await e.client.get(f"/s/{token}")).text()
    assert xss not in html and "&lt;script&gt;" in html


async def test_max_per_account_caps_surveys_per_account(engine_factory: Any) -> None:
    e = await engine_factory(survey={"max_delay": 0, "max_per_account": 1})
    for uid in ("p1", "p2"):
        await e.post({"type": "group", "userId": uid, "groupId": "acme", "messageId": f"g{uid}"})
        await e.identify(uid, email=f"{uid}@x.io")
    await e.dispatch()
    states = sorted([(await e.user(u))["surveys"][0]["state"] for u in ("p1", "p2")])
    assert states == ["sent", "skipped"]
    assert e.sink.count == 1


async def _tokens_of(e: Engine, user_id: str) -> list[str]:
    async with e.runtime.store.db.read() as conn:
        return [r[0] for r in await conn.execute(
            sa.select(SURVEYS.c.token).where(SURVEYS.c.user_id == user_id))]


async def test_deleted_user_pending_survey_is_cancelled(engine_factory: Any) -> None:
    e = await engine_factory()
    await e.identify("d1", email="d@x.io", createdAt=NOW.isoformat())
    [token] = await _tokens_of(e, "d1")
    assert (await e.client.get(f"/u/{token}")).status == 200  # a live link, before
    await e.post({"type": "delete", "userId": "d1", "messageId": "del-1"})
    # What the person (and anyone holding the link) sees: nothing of them is left.
    assert (await e.client.get("/v1/users/d1", headers=bearer())).status == 404
    for path in (f"/s/{token}", f"/u/{token}"):
        assert (await e.client.get(path)).status == 404
    assert (await e.client.post(f"/u/{token}", data={"List-Unsubscribe": "One-Click"})
            ).status == 404
    assert await _tokens_of(e, "d1") == []  # the pending survey is gone, not just cancelled
    e.clock.advance(timedelta(days=4))
    await e.dispatch()
    assert e.sink.count == 0


async def test_one_survey_per_address_whatever_user_id_carries_it(engine_factory: Any) -> None:
    """Twenty user ids with one address (in any case) get one email, not twenty; another
    id with that address later waits for the interval to end."""
    e = await engine_factory(survey={"max_delay": 0})
    for i in range(20):
        await e.identify(f"dup{i}", email="Same@Example.com" if i % 2 else "same@example.COM")
    await e.dispatch()
    assert e.sink.count == 1
    reasons = await e.decisions("dup7")
    assert "skipped: a survey to this address is already pending under another user id" in reasons
    e.clock.advance(timedelta(days=1))
    await e.identify("late", email=" SAME@example.com ")
    [late] = await e.decisions("late")
    # The test clock runs on from 10:00:00, so a loaded machine may be a second or two later.
    assert re.search(r"this address was surveyed on 2026-03-02T10:00:0\dZ under another user id",
                     late)
    assert re.match(r"scheduled for 2026-08-31T10:00:0\dZ", late)  # sent + 26w
    e.clock.advance(timedelta(days=30))
    await e.dispatch()
    assert e.sink.count == 1


async def test_one_survey_per_address_within_one_request(engine_factory: Any) -> None:
    e = await engine_factory(survey={"max_delay": 0})
    batch = [{"type": "identify", "userId": f"b{i}", "messageId": f"b{i}",
              "timestamp": NOW.isoformat(), "traits": {"email": f"Team{'@X.IO' if i else '@x.io'}"}}
             for i in range(5)]
    await e.post(batch)
    states = [[s["state"] for s in (await e.user(f"b{i}"))["surveys"]] for i in range(5)]
    assert sorted(states) == [[], [], [], [], ["pending"]]
    await e.dispatch()
    assert e.sink.count == 1


async def test_address_checked_again_when_the_survey_falls_due(engine_factory: Any) -> None:
    """u2 took u1's address after both were scheduled: one email, the other waits."""
    e = await engine_factory(survey={"max_delay": 0})
    await e.identify("u1", email="first@x.io")
    await e.identify("u2", email="second@x.io")
    await e.identify("u2", email="FIRST@x.io")
    await e.dispatch()
    assert e.sink.count == 1
    [survey] = (await e.user("u2"))["surveys"]
    assert survey["state"] == "pending" and survey["due_at"].startswith("2026-08-31")
    assert any(re.match(r"deferred to 2026-08-31T10:00:0\dZ: this address was surveyed on", r)
               for r in await e.decisions("u2"))


async def test_a_refusal_quoting_the_address_is_stored_without_it(engine_factory: Any) -> None:
    """`550 5.1.1 <addr>: no such user` names the person: stored (and logged) redacted."""
    e = await engine_factory(survey={"max_delay": 0})
    e.sink.fail_next(550, "5.1.1 <Bounce.Me@Example.com>: Recipient address rejected",
                     at="RCPT")
    await e.identify("bounce", email="Bounce.Me@Example.com")
    await e.dispatch()
    [survey] = (await e.user("bounce"))["surveys"]
    assert survey["state"] == "failed" and "550" in survey["last_error"]
    assert "bounce.me@example.com" not in survey["last_error"].casefold()
    assert "[email]" in survey["last_error"]
    assert not [r for r in await e.decisions("bounce") if "@example.com" in r.casefold()]


class _HeldBackend:
    """An email backend whose send waits until the test lets it finish: the moment between
    the SMTP server taking the message and npsd recording it sent."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.release = asyncio.Event()
        self.holding = asyncio.Event()

    async def send(self, message: Any, handoff: Any = None) -> None:
        if handoff is not None and not await handoff():
            raise HandoffRefused()
        self.sent.append(message.data)
        self.holding.set()
        await asyncio.wait_for(self.release.wait(), timeout=30)

    async def close(self) -> None:
        return None


async def test_a_customer_who_answers_before_the_send_is_recorded_is_heard(
        engine_factory: Any) -> None:
    """The email is in the customer's hands as soon as the server took it; npsd records
    "sent" a moment later. A click in between shows the survey and records the answer, and
    recording the send afterwards keeps the answer."""
    e = await engine_factory(survey={"max_delay": 0})
    held = _HeldBackend()
    e.backend = held  # type: ignore[assignment]
    await e.identify("quick", email="quick@x.io")
    dispatch = asyncio.create_task(e.dispatch())
    await asyncio.wait_for(held.holding.wait(), timeout=30)
    match = re.search(rb"/s/([A-Za-z0-9_-]+)\?score=", held.sent[0])
    assert match is not None
    token = match.group(1).decode()
    assert (await e.client.get(f"/s/{token}?score=9")).status == 200
    answer = await e.client.post(f"/s/{token}", data={"score": "9", "comment": "fast"})
    assert answer.status == 200, await answer.text()
    held.release.set()
    assert await asyncio.wait_for(dispatch, timeout=30) == 1
    [survey] = (await e.user("quick"))["surveys"]
    assert survey["state"] == "answered" and survey["score"] == 9
    assert survey["comment"] == "fast" and survey["sent_at"] is not None
