"""Erasure as a person and an operator meet it, with `npsd run` as a process: identify →
survey emailed (file backend) → answered with a comment → Segment deletion request → every
place the person's data lives is checked: the read API, the links, the figures (`npsd
report`, /v1/nps), the sync-back to Segment (`npsd sync-now`), the outbox, every text column
of every table in the SQLite file, and the logs."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from storage.db import Database
from tests.conftest import ADMIN
from tests.fakes.segment_api import FakeSegment
from tests.harness import Daemon
from tests.privacy import find_everywhere, outbox_mail, token_in

EMAIL = "Erased.Person@Example.com"
COMMENT = "a-comment-only-the-erased-wrote"
NEEDLES = ["erased-user", EMAIL, COMMENT]


async def wait_for_mail(outbox: Path, count: int, timeout: float = 20.0) -> dict[str, str]:
    async with asyncio.timeout(timeout):
        while len(mail := outbox_mail(outbox) if outbox.exists() else {}) < count:
            await asyncio.sleep(0.05)
    return mail


async def _find(db_path: Path, needles: list[str]) -> set[tuple[str, str, str]]:
    db = Database(f"sqlite+aiosqlite:///{db_path}")
    try:
        return await find_everywhere(db, needles)
    finally:
        await db.close()


async def test_segment_delete_leaves_nothing_of_the_person(tmp_path: Path) -> None:
    db_path = tmp_path / "npsd.db"
    async with FakeSegment("wk") as seg:
        npsd = Daemon(tmp_path, f"sqlite+aiosqlite:///{db_path}",
                      survey={"min_delay": 0, "max_delay": 0},
                      segment={"write_key": "wk", "endpoint": seg.url})
        async with npsd:
            assert npsd.session is not None
            for n, (user_id, email, name) in enumerate((("erased-user", EMAIL, "Erased"),
                                                        ("stays", "stays@example.com", "Stays"))):
                status, _ = await npsd.post_segment({
                    "type": "identify", "userId": user_id, "messageId": f"identify-{n}",
                    "traits": {"email": email, "firstName": name, "groupId": "acme"}})
                assert status == 200
            mail = await wait_for_mail(tmp_path / "outbox", 2)
            # The .eml is written before the survey is recorded sent: wait for that.
            await npsd.wait_for_event("survey.sent", count=2, timeout=20)
            async with asyncio.timeout(20):
                for user_id in ("erased-user", "stays"):
                    while (await npsd.get_admin(f"/v1/users/{user_id}")
                           )[1]["surveys"][0]["state"] != "sent":
                        await asyncio.sleep(0.05)
            tokens = {("erased" if "Erased" in text else "stays"): token_in(text)
                      for text in mail.values()}
            for who, score, comment in (("erased", 3, COMMENT), ("stays", 9, "stays-own-words")):
                async with npsd.session.post(f"{npsd.url}/s/{tokens[who]}",
                                             data={"score": str(score), "comment": comment}) as r:
                    assert r.status == 200
            code, out, _ = await npsd.cli("report", "--json")
            assert json.loads(out)["overall"]["responses"] == 2  # both counted, before

            status, body = await npsd.post_segment(
                {"type": "delete", "userId": "erased-user", "messageId": "del-1"})
            assert (status, body["accepted"]) == (200, 1)

            assert (await npsd.get_admin("/v1/users/erased-user"))[0] == 404
            token = tokens["erased"]
            for method, path in (("GET", f"/s/{token}?score=3"), ("POST", f"/s/{token}"),
                                 ("GET", f"/u/{token}"), ("POST", f"/u/{token}")):
                async with npsd.session.request(method, npsd.url + path,
                                                data={"score": "10", "comment": "back"}) as r:
                    assert r.status == 404, (method, path)
            code, out, _ = await npsd.cli("report", "--json")
            report = json.loads(out)
            assert code == 0 and (report["overall"]["responses"], report["overall"]["sent"]) == (
                1, 1)
            assert [g["responses"] for g in report["by_account"]] == [1]
            _, nps = await npsd.get_admin("/v1/nps")
            assert (nps["responses"], nps["promoters"], nps["detractors"]) == (1, 1, 0)
            # The outbox keeps the other person's mail only.
            assert [token_in(t) for t in outbox_mail(tmp_path / "outbox").values()] == [
                tokens["stays"]]
            # The answer was recorded before the delete and never synced: it never will be.
            code, out, err = await npsd.cli("sync-now")
            assert code == 0, err + out
            sent = json.dumps(seg.messages)
            assert '"stays"' in sent
            assert "erased-user" not in sent and COMMENT not in sent
            assert EMAIL.casefold() not in sent.casefold()
            [group] = [m for m in seg.messages if m["type"] == "group"]
            assert group["traits"]["NPS_responses"] == 1
            code, out, err = await npsd.cli("why", "erased-user")
            assert code != 0 and "no user" in err
            # The admin door, for a request that does not come through Segment.
            async with npsd.session.delete(f"{npsd.url}/v1/users/stays") as r:
                assert r.status == 401
            async with npsd.session.delete(f"{npsd.url}/v1/users/stays",
                                           headers={"Authorization": f"Bearer {ADMIN}"}) as r:
                assert r.status == 204
            assert outbox_mail(tmp_path / "outbox") == {}
            assert (await npsd.get_admin("/v1/users/stays"))[0] == 404
        left = await _find(db_path, NEEDLES)
        assert left == {("suppressions", "user_id", "erased-user")}
        assert await _find(db_path, ["stays", "stays@example.com", "stays-own-words"]) == {
            ("suppressions", "user_id", "stays")}
        logs = "\n".join(npsd.raw_log).casefold()
        assert EMAIL.casefold() not in logs and COMMENT not in logs
        assert npsd.events("privacy.erased")[0]["users"] == 1
