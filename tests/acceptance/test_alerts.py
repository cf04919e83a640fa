"""Alerts and webhooks as the operator sees them: `npsd run` as a process, a customer
answering 2 on the survey page, npsd killed with SIGKILL right after the answer was
acknowledged, started again — and exactly one alert email, one Slack post and one signed
webhook arrive (the outbox rows were committed with the answer). `npsd status` then shows
nothing pending, and the logs never carry the secret, the Slack URL's path or the comment."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from pathlib import Path

from standardwebhooks.webhooks import Webhook

from tests.fakes.receiver import Receiver
from tests.fakes.smtp_sink import SmtpSink
from tests.harness import Daemon

SECRET = "whsec_" + base64.b64encode(b"acceptance-secret-of-32-bytes!!!").decode()
COMMENT = "The <b>export</b> broke & nobody answered"


async def test_one_alert_and_one_webhook_across_a_sigkill_after_the_answer(
        tmp_path: Path) -> None:
    async with SmtpSink() as sink, Receiver(slack=True, path="/services/T0/B0/s3cr3t") as slack, \
            Receiver() as hook:
        npsd = Daemon(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'npsd.db'}",
                      survey={"min_delay": 0, "max_delay": 0}, email={"backend": "smtp"},
                      alerts={"email_to": ["success@acme.example"],
                              "slack_webhook_url": slack.url},
                      webhooks={"urls": [hook.url], "secret": SECRET})
        npsd.sections["email.smtp"] = {"host": sink.host, "port": sink.port,
                                       "security": "none"}
        async with npsd:
            identify = {"type": "identify", "userId": "cust-1", "messageId": "c-1",
                        "traits": {"email": "cust@example.com", "name": "Cora Smith"}}
            assert (await npsd.post_segment(identify))[0] == 200
            [survey] = await sink.wait_for(1, timeout=20)
            body = survey.get_body(("plain",)).get_content()  # type: ignore[union-attr]
            token = re.search(r"/s/([A-Za-z0-9_-]+)\?score=", body).group(1)  # type: ignore[union-attr]
            assert npsd.session is not None
            async with npsd.session.post(f"{npsd.url}/s/{token}",
                                         data={"score": "2", "comment": COMMENT}) as r:
                assert r.status == 200
            await npsd.kill()  # right after the answer was acknowledged

            await npsd.start()
            await hook.wait_for(1, timeout=20, delivered=True)
            await slack.wait_for(1, timeout=20, delivered=True)
            await sink.wait_for(2, timeout=20)
            async with asyncio.timeout(20):  # every row settled: nothing can be sent again
                while True:
                    code, out, err = await npsd.cli("status", "--json")
                    assert code == 0, err
                    deliveries = json.loads(out)["deliveries"]
                    if deliveries["pending"] == 0:
                        break
                    await asyncio.sleep(0.1)
            assert deliveries["delivered"] == 3 and deliveries["dead"] == 0
            code, out, _ = await npsd.cli("status")
            assert "alerts and webhooks: pending 0 (due now 0), dead letters 0" in out

        alerts = [m for m in sink.messages if m["Subject"].startswith("NPS alert")]
        assert len(alerts) == 1 and alerts[0]["To"] == "success@acme.example"
        assert alerts[0]["Subject"] == "NPS alert: 2/10 from Cora Smith"
        html = alerts[0].get_body(("html",)).get_content()  # type: ignore[union-attr]
        assert "The &lt;b&gt;export&lt;/b&gt; broke &amp; nobody answered" in html
        assert f"{npsd.url}/console/users/cust-1" in html
        assert len(slack.requests) == 1 and "/console/users/cust-1|" in json.loads(
            slack.requests[0].body)["text"]
        [delivered] = hook.delivered()
        assert len({r.headers["webhook-id"] for r in hook.requests}) == 1
        event = Webhook(SECRET).verify(delivered.body, delivered.headers)
        assert event["type"] == "survey.answered"
        assert event["data"]["score"] == 2 and event["data"]["comment"] == COMMENT
        log = "\n".join(npsd.raw_log)
        assert npsd.events("delivery.sent") and "s3cr3t" not in log
        assert SECRET not in log and "export" not in log and "cust@example.com" not in log
