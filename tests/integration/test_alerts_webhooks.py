"""Alerts and webhooks end to end on both backends, over real sockets: a survey emailed
through an aiosmtpd sink, answered on its page, the outbox delivered by the Deliverer to
aiohttp servers playing Slack and a webhook receiver, time moved by the test's clock (never
slept). Signatures are verified with the `standardwebhooks` package."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa
from standardwebhooks.webhooks import Webhook

from daemon.runtime import RUNTIME, Runtime
from jobs.clock import MovableClock
from jobs.deliveries import Deliverer
from jobs.dispatch import Dispatcher
from jobs.email import EmailBackend, make_backend
from storage.sqlutil import DELIVERIES
from tests.conftest import ADMIN, API_KEY, basic, bearer
from tests.fakes.receiver import Receiver, Request
from tests.fakes.smtp_sink import SmtpSink
from tests.harness import NPSD, write_config

SECRET = "whsec_" + base64.b64encode(b"npsd-test-secret-32-bytes-long!!").decode()


@dataclass
class Loop:
    client: Any
    runtime: Runtime
    clock: MovableClock
    sink: SmtpSink
    hook: Receiver
    slack: Receiver
    deliverer: Deliverer
    dispatcher: Dispatcher
    n: int = 0

    async def survey_sent(self, user_id: str, **traits: Any) -> str:
        """Identify `user_id` (surveyed at once), email the survey; its token."""
        self.n += 1
        message = {"type": "identify", "userId": user_id, "messageId": f"m{self.n}",
                   "traits": {"email": f"{user_id}@example.com", **traits}}
        assert (await self.client.post("/v1/segment", json=message, headers=basic())).status == 200
        before = self.sink.count
        assert await self.dispatcher.run_once() == 1
        mails = await self.sink.wait_for(before + 1)
        body = mails[-1].get_body(("plain",)).get_content()
        found = re.search(r"/s/([A-Za-z0-9_-]+)\?score=", body)
        assert found is not None
        return found.group(1)

    async def answer(self, token: str, score: int, comment: str = "") -> None:
        r = await self.client.post(f"/s/{token}", data={"score": str(score), "comment": comment})
        assert r.status == 200, await r.text()

    async def deliver(self) -> int:
        return await self.deliverer.run_once()

    async def rows(self) -> list[Any]:
        async with self.runtime.store.db.read() as conn:
            return list((await conn.execute(sa.select(DELIVERIES).order_by(DELIVERIES.c.id))).all())

    def alerts(self) -> list[Any]:
        return [m for m in self.sink.messages if m["Subject"].startswith("NPS alert")]


@pytest.fixture
async def loop(make_client: Any, clock: MovableClock) -> AsyncIterator[Any]:
    backends: list[EmailBackend] = []
    sessions: list[aiohttp.ClientSession] = []
    async with SmtpSink() as sink, Receiver() as hook, Receiver(slack=True) as slack:
        async def start(**sections: Any) -> Loop:
            smtp = {"host": sink.host, "port": sink.port, "security": "none"}
            config: dict[str, Any] = {
                "email": {"backend": "smtp", "smtp": smtp},
                "survey": {"max_delay": 0, "min_delay": 0},
                "alerts": {"email_to": ["cs@acme.example"], "slack_webhook_url": slack.url},
                "webhooks": {"urls": [hook.url], "secret": SECRET},
            }
            for key, values in sections.items():
                config.setdefault(key, {}).update(values)
            client = await make_client(**config)
            runtime = client.server.app[RUNTIME]
            backend = make_backend(runtime.settings.email)
            backends.append(backend)
            session = aiohttp.ClientSession()
            sessions.append(session)
            deliverer = Deliverer(runtime.store, clock, runtime.owner, lambda: runtime.settings,
                                  lambda: backend, session,
                                  on_result=lambda c, r: runtime.metrics.deliveries.labels(c, r).inc())
            dispatcher = Dispatcher(runtime.store, clock, runtime.owner, lambda: runtime.settings,
                                    lambda: backend)
            return Loop(client, runtime, clock, sink, hook, slack, deliverer, dispatcher)

        yield start
        for backend in backends:
            await backend.close()
        for session in sessions:
            await session.close()


def verified(request: Request, secret: str = SECRET) -> Any:
    """The body, once the standardwebhooks package accepts its signature."""
    return Webhook(secret).verify(request.body, request.headers)


async def test_a_low_answer_alerts_once_and_a_revision_down_into_the_range_again(loop: Any) -> None:
    e: Loop = await loop()
    token = await e.survey_sent("u1", name="Ann Lee")
    await e.answer(token, 3, "Export <b>fails</b> & more")
    assert await e.deliver() == 3  # webhook, email, Slack
    [mail] = e.alerts()
    assert mail["To"] == "cs@acme.example" and mail["Subject"] == "NPS alert: 3/10 from Ann Lee"
    html = mail.get_body(("html",)).get_content()
    assert "Export &lt;b&gt;fails&lt;/b&gt; &amp; more" in html and "<b>fails</b>" not in html
    assert f"{e.runtime.settings.server.public_url}/console/users/u1" in html
    [post] = e.slack.requests
    text = post.json()["text"]  # type: ignore[index]
    assert "> Export &lt;b&gt;fails&lt;/b&gt; &amp; more" in text and "/console/users/u1|" in text
    assert "webhook-signature" not in post.headers  # Slack is not signed
    [hook] = e.hook.requests
    body = verified(hook)
    assert body["type"] == "survey.answered"
    assert {k: body["data"][k] for k in ("userId", "score", "revision", "previousScore",
                                         "comment", "category")} == {
        "userId": "u1", "score": 3, "revision": 1, "previousScore": None,
        "comment": "Export <b>fails</b> & more", "category": "detractor"}
    # Down to 2: still a detractor, no second alert; the webhook says it is a revision.
    await e.answer(token, 2)
    await e.answer(token, 8)  # up out of the range: no alert
    assert await e.deliver() == 2
    assert len(e.alerts()) == 1 and len(e.slack.requests) == 1
    # Down into the range again: one more alert.
    await e.answer(token, 4)
    assert await e.deliver() == 3
    assert len(e.alerts()) == 2 and len(e.slack.requests) == 2
    revisions = [verified(r)["data"] for r in e.hook.requests]
    assert [(d["score"], d["revision"], d["previousScore"]) for d in revisions] == [
        (3, 1, None), (2, 2, 3), (8, 3, 2), (4, 4, 8)]
    assert len({r.headers["webhook-id"] for r in e.hook.requests}) == 4  # one per event
    assert await e.deliver() == 0  # nothing twice


async def test_500_three_times_then_200_keeps_the_webhook_id(loop: Any) -> None:
    e: Loop = await loop(alerts={"detractor_below": 0})
    token = await e.survey_sent("u2")
    await e.answer(token, 9)
    e.hook.answer(500, 500, 500)
    assert await e.deliver() == 1
    for wait in (timedelta(seconds=5), timedelta(seconds=30), timedelta(minutes=2)):
        assert await e.deliver() == 0  # not due yet
        # Halfway, not a second before: the moved clock still runs in real time.
        e.clock.advance(wait / 2)
        assert await e.deliver() == 0
        e.clock.advance(wait / 2)
        assert await e.deliver() == 1
    assert [r.status for r in e.hook.requests] == [500, 500, 500, 200]
    assert len({r.headers["webhook-id"] for r in e.hook.requests}) == 1
    assert len({r.headers["webhook-timestamp"] for r in e.hook.requests}) == 4  # signed anew
    assert len({r.body for r in e.hook.requests}) == 1
    for request in e.hook.requests:  # each attempt verifies on its own
        assert verified(request)["data"]["score"] == 9
    [row] = await e.rows()
    assert (row.state, row.attempts, row.last_status) == ("delivered", 4, 200)
    metrics = await (await e.client.get("/metrics")).text()
    assert 'npsd_deliveries_total{channel="webhook",result="retry"} 3.0' in metrics
    assert 'npsd_deliveries_total{channel="webhook",result="delivered"} 1.0' in metrics
    assert 'npsd_delivery_backlog{state="pending"} 0.0' in metrics


async def test_down_past_the_horizon_is_a_dead_letter_that_replay_delivers(
        loop: Any, tmp_path: Path) -> None:
    e: Loop = await loop(alerts={"detractor_below": 0})
    token = await e.survey_sent("u3")
    await e.answer(token, 10)
    e.hook.default = 503
    start = e.clock.now()
    attempts = 0
    while (await e.rows())[0].state == "pending":
        attempts += await e.deliver()
        e.clock.advance(timedelta(minutes=73))  # past the longest jittered hourly wait
        assert e.clock.now() - start < timedelta(hours=30), "never dead-lettered"
    [row] = await e.rows()
    assert row.state == "dead" and row.last_status == 503 and row.last_error == "HTTP 503"
    assert 20 <= attempts == row.attempts == len(e.hook.requests) <= 29
    status = await (await e.client.get("/v1/status", headers=bearer())).json()
    assert status["deliveries"]["dead"] == 1 and status["deliveries"]["pending"] == 0
    # The receiver is back; the operator replays (the CLI, as a process, on the same database).
    e.hook.default = 200
    config = tmp_path / "replay.toml"
    write_config(config, {"storage": {"url": e.runtime.settings.storage.url},
                          "intake": {"api_keys": [API_KEY]}, "admin": {"token": ADMIN},
                          "webhooks": {"urls": [e.hook.url], "secret": SECRET},
                          "log": {"format": "json", "level": "info"}})
    out = await cli(config, "status")
    assert "dead letters 1 (oldest from" in out and "npsd webhooks replay" in out
    out = await cli(config, "webhooks", "replay", "--since", "2d", "--json")
    assert json.loads(out.splitlines()[-1]) == {"replayed": 1, "delivered": 1, "retrying": 0,
                                                "dead": 0, "dropped": 0}
    replayed = e.hook.requests[-1]
    assert replayed.status == 200 and verified(replayed)["data"]["userId"] == "u3"
    assert replayed.headers["webhook-id"] == e.hook.requests[0].headers["webhook-id"]
    assert (await e.rows())[0].state == "delivered"
    assert "no dead letters" in await cli(config, "webhooks", "replay")


async def cli(config: Path, *args: str) -> str:
    import asyncio

    root = Path(__file__).resolve().parent.parent.parent
    proc = await asyncio.create_subprocess_exec(
        *NPSD, "--config", str(config), *args, cwd=str(root),
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert SECRET not in err.decode() + out.decode()
    return out.decode()


@pytest.mark.parametrize(("status", "reason"), [
    (404, "HTTP 404"), (410, "HTTP 410"),
    (301, "HTTP 301: redirects are not followed; update the URL")])
async def test_a_final_answer_is_a_dead_letter_at_once(loop: Any, status: int,
                                                       reason: str) -> None:
    e: Loop = await loop(alerts={"detractor_below": 0})
    token = await e.survey_sent("u4")
    await e.answer(token, 7)
    e.hook.answer(status)
    assert await e.deliver() == 1
    [row] = await e.rows()
    assert (row.state, row.attempts, row.last_error) == ("dead", 1, reason)
    assert len(e.hook.requests) == 1


async def test_redirects_are_not_followed(loop: Any) -> None:
    e: Loop = await loop(alerts={"detractor_below": 0})
    token = await e.survey_sent("u5")
    await e.answer(token, 7)
    e.hook.redirect_to = e.hook.url.replace("/hook", "/elsewhere")
    assert await e.deliver() == 1
    assert [r.path for r in e.hook.requests] == ["/hook"]  # never went to /elsewhere
    assert (await e.rows())[0].state == "dead"


async def test_408_and_429_are_retried_honouring_retry_after(loop: Any) -> None:
    e: Loop = await loop(alerts={"detractor_below": 0})
    token = await e.survey_sent("u6")
    await e.answer(token, 7)
    e.hook.answer(408, 429)
    assert await e.deliver() == 1
    e.clock.advance(timedelta(seconds=5))
    assert await e.deliver() == 1
    e.clock.advance(timedelta(seconds=30))
    assert await e.deliver() == 1
    assert [r.status for r in e.hook.requests] == [408, 429, 200]


async def test_erasure_drops_what_is_pending_and_sends_user_erased(loop: Any) -> None:
    e: Loop = await loop()
    token = await e.survey_sent("u7")
    await e.answer(token, 1, "call me: ann@example.com")
    e.hook.default = 503
    assert await e.deliver() == 3  # the webhook fails; email and Slack arrive
    e.slack.requests.clear()
    await e.answer(token, 0)  # another webhook, pending
    r = await e.client.delete("/v1/users/u7", headers=bearer())
    assert r.status == 204
    rows = await e.rows()
    assert [(x.event, x.user_id, json.loads(x.body)) for x in rows] == [
        ("user.erased", None, {"type": "user.erased", "timestamp": json.loads(rows[0].body)[
            "timestamp"], "data": {"userId": "u7"}})]
    assert all("ann@example.com" not in x.body for x in rows)
    e.hook.default = 200
    before = len(e.hook.requests)
    assert await e.deliver() == 1
    [erased] = e.hook.requests[before:]
    assert verified(erased)["data"] == {"userId": "u7"}
    assert e.slack.requests == []


async def test_unsubscribe_sends_user_unsubscribed(loop: Any) -> None:
    e: Loop = await loop()
    token = await e.survey_sent("u8")
    assert (await e.client.post(f"/u/{token}", data={"List-Unsubscribe": "One-Click"})).status == 200
    assert (await e.client.post(f"/u/{token}", data={})).status == 200  # again: nothing new
    assert await e.deliver() == 1
    [request] = e.hook.requests
    body = verified(request)
    assert body["type"] == "user.unsubscribed"
    assert body["data"]["userId"] == "u8" and body["data"]["email"] == "u8@example.com"


async def test_a_receiver_taken_out_of_the_config_is_dropped(loop: Any) -> None:
    e: Loop = await loop(alerts={"detractor_below": 0})
    token = await e.survey_sent("u9")
    await e.answer(token, 7)
    s = e.runtime.settings
    from dataclasses import replace
    e.runtime.settings = replace(s, webhooks=replace(s.webhooks, urls=("https://elsewhere.example/x",)))
    assert await e.deliver() == 1
    assert e.hook.requests == [] and (await e.rows())[0].state == "dropped"


async def test_a_closed_survey_sends_nothing(loop: Any) -> None:
    e: Loop = await loop()
    token = await e.survey_sent("u10")
    e.clock.advance(timedelta(days=31))  # past the response window
    r = await e.client.post(f"/s/{token}", data={"score": "2"})
    assert r.status == 410
    assert await e.rows() == [] and await e.deliver() == 0


async def test_a_crashed_holders_claims_are_taken_over(loop: Any) -> None:
    e: Loop = await loop(alerts={"detractor_below": 0})
    token = await e.survey_sent("u11")
    await e.answer(token, 7)
    dead = "{}:999999999:abc".format(__import__("socket").gethostname())
    claimed = await e.runtime.store.claim_deliveries(e.clock.now(), dead, 10, timedelta(minutes=5))
    assert len(claimed) == 1
    assert await e.deliver() == 0  # leased by the dead process
    assert await e.deliverer.take_over_dead() == 1
    assert await e.deliver() == 1 and len(e.hook.requests) == 1





async def test_an_alert_email_file_goes_with_the_erasure(make_client: Any, clock: MovableClock,
                                                         tmp_path: Path) -> None:
    """File backend: the alert's .eml (it holds the comment) is named after the survey and
    removed when the person is erased, like the survey's own."""
    import email
    from email import policy

    client = await make_client(survey={"max_delay": 0, "min_delay": 0},
                               alerts={"email_to": ["cs@acme.example"]})
    runtime = client.server.app[RUNTIME]
    backend = make_backend(runtime.settings.email)
    message = {"type": "identify", "userId": "f1", "messageId": "f-1",
               "traits": {"email": "f1@example.com"}}
    assert (await client.post("/v1/segment", json=message, headers=basic())).status == 200
    await Dispatcher(runtime.store, clock, runtime.owner, lambda: runtime.settings,
                     lambda: backend).run_once()
    outbox = tmp_path / "outbox"
    [survey_file] = list(outbox.glob("*.eml"))
    parsed = email.message_from_bytes(survey_file.read_bytes(), policy=policy.default)
    text = parsed.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    token = re.search(r"/s/([A-Za-z0-9_-]+)\?score=", text).group(1)  # type: ignore[union-attr]
    assert (await client.post(f"/s/{token}", data={"score": "1", "comment": "awful"})).status == 200
    async with aiohttp.ClientSession() as session:
        deliverer = Deliverer(runtime.store, clock, runtime.owner, lambda: runtime.settings,
                              lambda: backend, session)
        assert await deliverer.run_once() == 1
    [alert_file] = list(outbox.glob("*-alert.eml"))
    assert b"awful" in alert_file.read_bytes()
    assert (await client.delete("/v1/users/f1", headers=bearer())).status == 204
    assert list(outbox.glob("*.eml")) == []


async def test_a_row_npsd_cannot_render_is_a_dead_letter_not_a_loop(loop: Any) -> None:
    e: Loop = await loop()
    from storage.deliveries import NewDelivery, insert_now

    async with e.runtime.store.db.write() as conn:
        await insert_now(conn, [NewDelivery("msg_x", "slack", "slack", "alert", "not json",
                                            "u12", None)], e.clock.now())
    assert await e.deliver() == 1
    [row] = await e.rows()
    assert (row.state, row.last_error) == ("dead", "npsd failed: JSONDecodeError")
    assert e.slack.requests == [] and await e.deliver() == 0


async def test_two_processes_deliver_each_row_once(db_url: str) -> None:
    """Two stores on one database (as two npsd processes), each with its deliverer, run at
    once: every row reaches the receiver exactly once (leased claims, skip-locked on
    PostgreSQL)."""
    from settings import Settings, WebhookSettings
    from storage.deliveries import NewDelivery, insert_now
    from storage.sql_store import SqlStore

    clock = MovableClock()
    async with Receiver() as hook, SqlStore(db_url, clock) as one, \
            SqlStore(db_url, clock, migrate=False) as two, aiohttp.ClientSession() as session:
        settings = Settings(webhooks=WebhookSettings(urls=(hook.url,), secret=SECRET))
        async with one.db.write() as conn:
            await insert_now(conn, [NewDelivery(f"msg_{i}", "webhook", hook.url,
                                                "survey.answered", "{}", f"u{i}", i)
                                    for i in range(300)], clock.now())
        workers = [Deliverer(store, clock, f"proc-{n}", lambda: settings,
                             lambda: None, session)  # type: ignore[arg-type,return-value]
                   for n, store in enumerate((one, two))]
        done = await asyncio.gather(*(w.run_once() for w in workers))
        assert sum(done) == 300 and all(done)  # both took part
        ids = [r.headers["webhook-id"] for r in hook.requests]
        assert len(ids) == len(set(ids)) == 300
