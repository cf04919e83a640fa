"""Survey on an event and in the customer's language, as the operator and the customer see
it: `npsd run` as a process, a real SIGHUP that adds `survey.trigger_events`, a German
customer whose "Order Completed" track brings one German email, and `npsd why` naming the
event."""

from __future__ import annotations

import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.fakes.smtp_sink import SmtpSink
from tests.harness import Daemon

ORDER = "Order Completed"


async def test_event_after_sighup_brings_one_german_email(tmp_path: Path) -> None:
    old = (datetime.now(UTC) - timedelta(days=90)).isoformat()
    async with SmtpSink() as sink:
        npsd = Daemon(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'npsd.db'}",
                      survey={"min_delay": "2s"}, email={"backend": "smtp"})
        npsd.sections["email.smtp"] = {"host": sink.host, "port": sink.port,
                                       "security": "none"}
        async with npsd:
            identify = {"type": "identify", "userId": "kunde", "messageId": "k-1",
                        "context": {"locale": "de-AT"},
                        "traits": {"email": "kunde@example.com", "firstName": "Lena",
                                   "createdAt": old}}
            status, _ = await npsd.post_segment(identify)
            assert status == 200
            track = {"type": "track", "userId": "kunde", "event": ORDER, "messageId": "k-2"}
            assert (await npsd.post_segment(track))[0] == 200
            _, user = await npsd.get_admin("/v1/users/kunde")
            assert user["surveys"] == []  # older than max_delay, and no trigger yet

            npsd.sections["survey"]["trigger_events"] = [ORDER]
            npsd.write_config()
            await npsd.send_signal(signal.SIGHUP)
            await npsd.wait_for_event("config.reloaded", 1, timeout=10)
            track["messageId"] = "k-3"
            assert (await npsd.post_segment(track))[0] == 200
            [mail] = await sink.wait_for(1, timeout=15)
            assert mail["Subject"] == "Würden Sie Acme weiterempfehlen?"
            plain = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
            assert plain.startswith("Hallo Lena,")
            code, out, _ = await npsd.cli("why", "kunde")
            assert code == 0 and f'"{ORDER}"+2s' in out, out
            assert "older than max_delay" in out
            track["messageId"] = "k-4"  # another order: once per interval, no second email
            assert (await npsd.post_segment(track))[0] == 200  # acknowledged once committed
            _, user = await npsd.get_admin("/v1/users/kunde")
            [pending] = [s for s in user["surveys"] if s["state"] == "pending"]
            assert pending["due_at"] > (datetime.now(UTC) + timedelta(weeks=25)).isoformat()
            assert sink.count == 1
