"""The product's promise, as a customer and an operator see it: `npsd run` as a process, a
real SMTP server, one identify → exactly one well-timed email → an answer on the page."""

from __future__ import annotations

import json
import re
import signal
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from pathlib import Path

from tests.fakes.smtp_sink import SmtpSink
from tests.harness import Daemon
from tests.waiting import wait_for


def identify(user_id: str, n: int, created: datetime) -> dict[str, object]:
    return {"type": "identify", "userId": user_id, "messageId": f"{user_id}-{n}",
            "traits": {"email": f"{user_id}@example.com", "firstName": "Peter",
                       "createdAt": created.isoformat()}}


def token_in(sink: SmtpSink, index: int = 0) -> str:
    body = sink.messages[index].get_body(("plain",))
    assert body is not None
    match = re.search(r"/s/([A-Za-z0-9_-]+)\?score=7", body.get_content())
    assert match is not None
    return match.group(1)


async def test_identify_to_one_email_to_answer(tmp_path: Path) -> None:
    async with SmtpSink() as sink:
        npsd = Daemon(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'npsd.db'}",
                      survey={"min_delay": "3d", "max_delay": "14d"},
                      email={"backend": "smtp"})
        npsd.sections["email.smtp"] = {"host": sink.host, "port": sink.port,
                                       "security": "none"}
        async with npsd:
            # Created min_delay minus 3 seconds ago: due in 3 seconds.
            created = datetime.now(UTC) - timedelta(days=3) + timedelta(seconds=3)
            due = created + timedelta(days=3)
            status, body = await npsd.post_segment(identify("peter", 1, created))
            assert status == 200 and body["accepted"] == 1
            await sink.wait_for(1, timeout=10)
            # Not before it is due, and soon after (the mail server's own arrival time).
            [arrived] = sink.arrived_at
            assert due <= arrived < due + timedelta(seconds=5), (due, arrived)
            token = token_in(sink)
            assert npsd.session is not None

            # The mail server has it a moment before npsd records it sent (the link opens then).
            async def recorded_sent() -> bool:
                _, user = await npsd.get_admin("/v1/users/peter")
                return bool(user["surveys"][0]["state"] == "sent")

            await wait_for(recorded_sent, timeout=10, what="the survey recorded sent")
            async with npsd.session.get(f"{npsd.url}/s/{token}?score=7") as page:
                assert page.status == 200 and "recommend" in await page.text()
            async with npsd.session.post(f"{npsd.url}/s/{token}",
                                         data={"score": "7", "comment": "solid"}) as answer:
                assert answer.status == 200
            status, user = await npsd.get_admin("/v1/users/peter")
            assert status == 200 and user["surveys"][0]["score"] == 7 and user["surveys"][0]["state"] == "answered"
            code, out, _ = await npsd.cli("report", "--json")
            assert code == 0 and json.loads(out)["overall"]["passives"] == 1

            # Nothing makes a second email: redelivery, more identifies, SIGHUP, restart.
            assert await npsd.post_segment(identify("peter", 1, created)) == (
                200, {"accepted": 0, "duplicates": 1, "rejected": []})
            for n in range(2, 12):
                status, body = await npsd.post_segment(identify("peter", n, created))
                assert status == 200 and body["accepted"] == 1
            await npsd.send_signal(signal.SIGHUP)
            await npsd.wait_for_event("config.reloaded")
            assert await npsd.stop() == 0
            await npsd.start()
            # A probe due at once: when its email has arrived, the restarted dispatcher has
            # run over everything that was due, and Peter's survey was not among it.
            probe = {"type": "identify", "userId": "probe", "messageId": "probe-1",
                     "traits": {"email": "probe@example.com"}}
            assert (await npsd.post_segment(probe))[0] == 200
            await sink.wait_for(2, timeout=15)
            assert sorted(m["To"] for m in sink.messages) == [
                "Peter <peter@example.com>", "probe@example.com"]
            # The sink has the message before npsd has the SMTP reply and logs it.
            await npsd.wait_for_event("survey.sent", count=2, timeout=10)
            assert len(npsd.events("survey.sent")) == 2  # logs span both runs
            _, why = await npsd.get_admin("/v1/users/peter/decisions")
            assert any("createdAt+3d" in d["reason"] for d in why["decisions"])


def recipients_in(outbox: Path) -> list[str]:
    return sorted(message_from_bytes(p.read_bytes())["To"] for p in outbox.glob("*.eml"))


async def test_survey_due_while_stopped_is_sent_once_at_start(tmp_path: Path) -> None:
    npsd = Daemon(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'npsd.db'}",
                  survey={"min_delay": "3d", "max_delay": "14d"})
    outbox = tmp_path / "outbox"
    async with npsd:
        created = datetime.now(UTC) - timedelta(days=3) + timedelta(seconds=2)
        await npsd.post_segment(identify("late", 1, created))
        assert await npsd.stop() == 0
        assert recipients_in(outbox) == []  # not sent before the stop
        # It falls due while npsd is down.
        await wait_for(lambda: datetime.now(UTC) > created + timedelta(days=3), timeout=10,
                       what="the survey's due time")
        await npsd.start()
        await npsd.wait_for_event("survey.sent", timeout=10)
        # A probe due at once: when its email is out, the dispatcher has run over everything
        # due since the start, and the late survey went out only once.
        await npsd.post_segment({"type": "identify", "userId": "probe", "messageId": "probe-1",
                                 "traits": {"email": "probe@example.com"}})
        await wait_for(lambda: len(recipients_in(outbox)) >= 2, timeout=10, what="the probe")
        assert recipients_in(outbox) == ["Peter <late@example.com>", "probe@example.com"]
        # The .eml is written a moment before the survey is recorded sent.
        await npsd.wait_for_event("survey.sent", count=2, timeout=10)
        assert len(npsd.events("survey.sent")) == 2


async def test_unknown_and_random_tokens_are_404(tmp_path: Path) -> None:
    async with Daemon(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'npsd.db'}") as npsd:
        assert npsd.session is not None
        for method, path in (("GET", "/s/nope"), ("GET", "/u/nope"), ("POST", "/s/nope"),
                             ("POST", "/u/nope"), ("GET", "/s/" + "A" * 43)):
            async with npsd.session.request(method, npsd.url + path,
                                            data={"score": "5"} if method == "POST" else None
                                            ) as r:
                # The customer sees a page saying what is wrong, not a bare error.
                assert r.status == 404 and r.content_type == "text/html", (method, path)
                assert "Survey not found" in await r.text(), (method, path)
        status, _ = await npsd.get_admin("/v1/status")
        assert status == 200
        assert not list((tmp_path / "outbox").glob("*.eml"))  # and nothing was sent
