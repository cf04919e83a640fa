"""Erasure on SQLite and PostgreSQL: after a Segment `delete` or `DELETE /v1/users/{id}`
nothing of the person is left in any table or the outbox (only the suppressed id), their
links are unknown, nothing of theirs is synced, and no figure counts them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa
from sqlmodel import SQLModel

from daemon.runtime import RUNTIME
from jobs.clock import MovableClock
from jobs.dispatch import Dispatcher
from jobs.email import make_backend
from jobs.housekeeping import housekeeping
from jobs.sync import Syncer
from storage import personal_data, surveys
from storage.sqlutil import SURVEYS, SYNC_FAILURES
from storage.survey_plan import email_key
from tests.conftest import basic, bearer
from tests.fakes.segment_api import FakeSegment
from tests.privacy import find_everywhere, outbox_mail, token_in

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
EMAIL = "Gone.Person@Example.com"
COMMENT = "the-secret-comment-of-gone"
NEEDLES = ["gone-user", "anon-of-gone", EMAIL, COMMENT]


class Book:
    def __init__(self, client: Any, clock: MovableClock, seg: FakeSegment,
                 session: aiohttp.ClientSession, outbox: Path) -> None:
        self.client, self.clock, self.seg, self.outbox = client, clock, seg, outbox
        runtime = client.server.app[RUNTIME]
        self.runtime, self.store, self.db = runtime, runtime.store, runtime.store.db
        backend = make_backend(runtime.settings.email, clock)
        self.dispatcher = Dispatcher(runtime.store, clock, runtime.owner, lambda: runtime.settings,
                                     lambda: backend)
        self.syncer = Syncer(runtime.store, clock, "sync-test", lambda: runtime.settings.segment,
                             session)
        self.n = 0

    async def post(self, message: dict[str, Any]) -> None:
        self.n += 1
        message = {"messageId": f"m-{self.n}", "timestamp": self.clock.now().isoformat(),
                   **message}
        response = await self.client.post("/v1/segment", json=message, headers=basic())
        assert response.status == 200, await response.text()

    async def get(self, path: str) -> tuple[int, Any]:
        response = await self.client.get(path, headers=bearer())
        return response.status, await response.json(content_type=None)

    async def answer(self, token: str, score: int, comment: str) -> None:
        response = await self.client.post(f"/s/{token}",
                                          data={"score": str(score), "comment": comment})
        assert response.status == 200

    def tokens(self) -> dict[str, str]:
        """The token of each mail in the outbox, by recipient's first name in the greeting."""
        return {("gone" if "Gone" in text else "stay"): token_in(text)
                for text in outbox_mail(self.outbox).values()}


@pytest.fixture
async def book(make_client: Any, clock: MovableClock, tmp_path: Path) -> AsyncIterator[Book]:
    clock.set(NOW)
    async with FakeSegment("wk") as seg, aiohttp.ClientSession() as session:
        client = await make_client(survey={"max_delay": 0, "min_delay": 0},
                                   segment={"write_key": "wk", "endpoint": seg.url})
        yield Book(client, clock, seg, session, tmp_path / "outbox")


async def surveyed_and_answered(b: Book) -> dict[str, str]:
    """Two members of acme, both emailed and answered; gone-user also has an alias."""
    await b.post({"type": "identify", "userId": "gone-user", "anonymousId": "anon-of-gone",
                  "traits": {"email": EMAIL, "firstName": "Gone", "groupId": "acme"}})
    await b.post({"type": "identify", "userId": "stay", "traits": {
        "email": "stay@example.com", "firstName": "Stay", "groupId": "acme"}})
    assert await b.dispatcher.run_once() == 2
    tokens = b.tokens()
    await b.answer(tokens["gone"], 2, COMMENT)
    await b.answer(tokens["stay"], 10, "fine")
    # What a refused sync message and a failed attempt leave (texts from outside).
    survey_id = (await b.get("/v1/users/gone-user"))[1]["surveys"][0]["id"]
    async with b.db.write() as conn:
        await conn.execute(sa.update(SURVEYS).where(SURVEYS.c.id == survey_id)
                           .values(last_error=f"450 <{EMAIL}> try later"))
        await conn.execute(sa.insert(SYNC_FAILURES).values(
            at=NOW, survey_id=survey_id, user_id="gone-user", message_id="npsd-x",
            reason=f"bad message {COMMENT}"))
    return tokens


async def erase(b: Book, door: str) -> None:
    if door == "segment":
        await b.post({"type": "delete", "userId": "gone-user"})
    else:
        response = await b.client.delete("/v1/users/gone-user", headers=bearer())
        assert response.status == 204


@pytest.mark.parametrize("door", ["segment", "admin"])
async def test_erasure_leaves_nothing(book: Book, door: str) -> None:
    b = book
    tokens = await surveyed_and_answered(b)
    before = await find_everywhere(b.db, NEEDLES)
    assert {t for t, _, n in before if n == COMMENT} == {"surveys", "sync_failures"}
    assert {t for t, _, n in before if n == EMAIL} == {"users", "surveys"}
    assert len(outbox_mail(b.outbox)) == 2
    await erase(b, door)
    # Only the suppressed ids are left, in the whole schema: the user id and the
    # anonymousId folded into it, which the person's old browser may still send.
    assert await find_everywhere(b.db, NEEDLES) == {("suppressions", "user_id", "gone-user"),
                                                    ("suppressions", "user_id", "anon-of-gone")}
    for path in ("/v1/users/gone-user", "/v1/users/anon-of-gone",
                 "/v1/users/gone-user/decisions"):
        assert (await b.get(path))[0] == 404
    token = tokens["gone"]
    for method, path in (("GET", f"/s/{token}"), ("GET", f"/s/{token}?score=3"),
                         ("POST", f"/s/{token}"), ("GET", f"/u/{token}"), ("POST", f"/u/{token}")):
        data = {"score": "9", "comment": "again"} if path.startswith("/s") else {
            "List-Unsubscribe": "One-Click"}
        response = await b.client.request(method, path, data=data if method == "POST" else None)
        assert response.status == 404, (method, path)
    # The other member's mail stays; the erased one's is gone.
    assert [token_in(t) for t in outbox_mail(b.outbox).values()] == [tokens["stay"]]
    # Figures count the other member only, whichever way they are cut.
    _, nps = await b.get("/v1/nps")
    assert (nps["responses"], nps["sent"], nps["detractors"], nps["nps"]) == (1, 1, 0, 100.0)
    for by in ("account", "month"):
        _, cut = await b.get(f"/v1/nps?by={by}")
        assert [(g["responses"], g["sent"], g["nps"]) for g in cut["groups"]] == [(1, 1, 100.0)]
    _, account = await b.get("/v1/accounts/acme")
    assert account["members"] == ["stay"] and account["responses"] == 1
    # The sync-back sends nothing of theirs, also not the answer recorded before the delete.
    assert (await b.syncer.run("test"))["result"] == "ok"
    sent = [str(m) for m in b.seg.messages]
    assert sent and not [m for m in sent if "gone-user" in m or COMMENT in m or EMAIL in m]
    [group] = [m for m in b.seg.messages if m["type"] == "group"]
    assert group["traits"] == {"NPS": 100.0, "NPS_responses": 1}


@pytest.mark.parametrize("door", ["segment", "admin"])
async def test_the_old_anonymous_id_does_not_bring_the_person_back(book: Book,
                                                                   door: str) -> None:
    """Segment delivers late: a page and an identify from the person's old browser, under
    the anonymousId that was folded into the erased user, arrive after the erasure."""
    b = book
    await b.post({"type": "page", "anonymousId": "anon-of-gone", "name": "Home"})
    await b.post({"type": "alias", "previousId": "anon-of-gone", "userId": "gone-user"})
    await b.post({"type": "identify", "userId": "gone-user",
                  "traits": {"email": EMAIL, "firstName": "Gone"}})
    await erase(b, door)
    await b.post({"type": "page", "anonymousId": "anon-of-gone", "name": "Home"})
    await b.post({"type": "identify", "anonymousId": "anon-of-gone",
                  "traits": {"email": EMAIL, "firstName": "Gone"}})
    await b.post({"type": "identify", "userId": "gone-user", "anonymousId": "anon-of-gone",
                  "traits": {"email": EMAIL}})
    for path in ("/v1/users/anon-of-gone", "/v1/users/gone-user"):
        assert (await b.get(path))[0] == 404, path
    assert {t for t, _, n in await find_everywhere(b.db, NEEDLES)} == {"suppressions"}
    assert await b.dispatcher.run_once() == 0 and outbox_mail(b.outbox) == {}


async def test_someone_else_on_the_erased_persons_browser_is_still_taken(book: Book) -> None:
    """A shared browser (no analytics.reset()): the next person's identify carries the
    erased person's anonymousId. They are created and surveyed; the old id is not linked."""
    b = book
    await b.post({"type": "identify", "userId": "gone-user", "anonymousId": "anon-of-gone",
                  "traits": {"email": EMAIL}})
    await b.post({"type": "delete", "userId": "gone-user"})
    await b.post({"type": "identify", "userId": "next-person", "anonymousId": "anon-of-gone",
                  "traits": {"email": "next@example.com", "firstName": "Next"}})
    await b.post({"type": "track", "userId": "next-person", "anonymousId": "anon-of-gone",
                  "event": "Clicked"})
    status, user = await b.get("/v1/users/next-person")
    assert status == 200 and user["traits"]["email"] == "next@example.com", user
    assert user["activity"]["events"] == 1
    assert (await b.get("/v1/users/anon-of-gone"))[0] == 404
    assert await b.dispatcher.run_once() == 1
    async with b.db.read() as conn:
        aliases = (await conn.execute(sa.text("SELECT count(*) FROM aliases"))).scalar()
    assert aliases == 0


async def test_a_group_call_of_an_erased_member_still_writes_the_account(book: Book) -> None:
    b = book
    await b.post({"type": "identify", "userId": "gone-user", "traits": {"email": EMAIL}})
    await b.post({"type": "delete", "userId": "gone-user"})
    await b.post({"type": "group", "userId": "gone-user", "groupId": "newco",
                  "traits": {"name": "NewCo", "plan": "pro"}})
    status, account = await b.get("/v1/accounts/newco")
    assert status == 200, account
    assert account["traits"] == {"name": "NewCo", "plan": "pro"} and account["members"] == []
    assert (await b.get("/v1/users/gone-user"))[0] == 404


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # SQLite's own files
async def test_the_sqlite_files_hold_no_copy_of_the_erased_person(book: Book) -> None:
    """Not only the tables: the database file's free pages and the write-ahead log, where
    earlier versions of the person's pages were, are cleared within seconds."""
    b = book
    path = b.db.sqlite_path
    assert path is not None
    await surveyed_and_answered(b)
    for n in range(60):  # enough erased rows that whole pages are freed, not only cells
        await b.post({"type": "identify", "userId": f"race-{n}",
                      "traits": {"email": f"racer-{n}@example.com", "name": f"Racer {n}"}})
    files = [Path(path), Path(f"{path}-wal")]

    def copies() -> set[str]:
        data = b"".join(f.read_bytes() for f in files if f.exists()).lower()
        needles = [EMAIL, COMMENT, "racer-7@example.com", "racer-42@example.com"]
        return {n for n in needles if n.lower().encode() in data}

    assert copies()  # what the test looks for is there before
    await erase(b, "admin")
    deletes = [{"type": "delete", "userId": f"race-{n}", "messageId": f"del-{n}"}
               for n in range(60)]
    response = await b.client.post("/v1/segment", json={"batch": deletes}, headers=basic())
    assert response.status == 200, await response.text()
    for _ in range(100):
        if not copies():
            break
        await asyncio.sleep(0.1)
    assert copies() == set()
    assert (await b.get("/v1/users/stay"))[0] == 200  # the others are untouched


async def test_nothing_ties_a_kept_address_key_to_the_erased_id(book: Book) -> None:
    """The address key is kept so an import cannot bring the person back; neither its time
    nor (SQLite) its place in the file says which erased id it belonged to."""
    b = book
    for n in range(12):
        await b.post({"type": "identify", "userId": f"e-{n}",
                      "traits": {"email": f"e-{n}@example.com"}})
        b.clock.advance(timedelta(minutes=7))
        await b.post({"type": "delete", "userId": f"e-{n}"})
    async with b.db.read() as conn:
        times = {str(r[0]) for r in await conn.execute(sa.text(
            "SELECT suppressed_at FROM suppressions UNION ALL "
            "SELECT suppressed_at FROM suppressed_addresses"))}
        assert len(times) == 1 and "10:00" not in times.pop()  # the day, not the minute
        if b.db.sqlite_path is not None:
            keys = [str(r[0]) for r in await conn.execute(sa.text(
                "SELECT email_key FROM suppressed_addresses ORDER BY rowid"))]
            erased_order = [email_key(f"e-{n}@example.com") for n in range(12)]
            assert sorted(keys) == sorted(erased_order) and keys != erased_order


async def test_delete_user_needs_the_admin_token_and_a_known_id(book: Book) -> None:
    b = book
    await b.post({"type": "identify", "userId": "known", "traits": {"email": "k@example.com"}})
    assert (await b.client.delete("/v1/users/known")).status == 401
    assert (await b.client.delete("/v1/users/known", headers=bearer("wrong"))).status == 401
    missing = await b.client.delete("/v1/users/nobody", headers=bearer())
    assert missing.status == 404 and "message" in await missing.json()
    assert (await b.get("/v1/users/known"))[0] == 200  # a refused erasure erased nothing
    assert (await b.client.delete("/v1/users/known", headers=bearer())).status == 204
    assert (await b.client.delete("/v1/users/known", headers=bearer())).status == 404
    await b.post({"type": "identify", "userId": "known", "traits": {"email": "k@example.com"}})
    assert (await b.get("/v1/users/known"))[0] == 404  # suppressed, as after a Segment delete


async def test_an_erasure_committed_before_the_hand_off_stops_the_send(book: Book) -> None:
    b = book
    await b.post({"type": "identify", "userId": "gone-user", "traits": {"email": EMAIL}})
    [claim] = await b.store.claim_due(b.clock.now(), "owner-1", 10, timedelta(seconds=25))
    await b.post({"type": "delete", "userId": "gone-user"})  # lands while it is claimed
    assert await b.store.settle([], b.clock.now(), owner="owner-1",
                                 lease=timedelta(seconds=25), handoff=[claim.id]) == set()
    # What the dispatcher then records of that claim leaves no decision behind.
    await b.store.record_outcomes([surveys.Outcome(claim.id, "gone-user", "failed",
                                                         f"failed: <{EMAIL}>")], b.clock.now())
    assert await find_everywhere(b.db, NEEDLES) == {("suppressions", "user_id", "gone-user")}


async def test_a_survey_handed_off_is_never_given_to_a_suppressed_user(book: Book) -> None:
    """The hand-off checks suppression itself, not only the survey row."""
    b = book
    await b.post({"type": "identify", "userId": "u1", "traits": {"email": "u1@example.com"}})
    [claim] = await b.store.claim_due(b.clock.now(), "owner-1", 10, timedelta(seconds=25))
    async with b.db.write() as conn:
        await conn.execute(sa.text("INSERT INTO suppressions (user_id, suppressed_at) "
                                   "VALUES ('u1', :at)"), {"at": NOW})
    assert await b.store.settle([], b.clock.now(), owner="owner-1",
                                 lease=timedelta(seconds=25), handoff=[claim.id]) == set()


async def test_housekeeping_removes_mail_files_of_surveys_that_are_gone(book: Book) -> None:
    """An erasure interrupted between its commit and the file removal (or a mail written
    just after it) is tidied up by housekeeping; other mail stays."""
    b = book
    await b.post({"type": "identify", "userId": "stay", "traits": {"email": "s@example.com"}})
    await b.dispatcher.run_once()
    [kept] = list(b.outbox.glob("*.eml"))
    orphan = b.outbox / "20260302T100000.000000Z-survey-99999.eml"
    orphan.write_bytes(b"Subject: left behind\r\n\r\nhello")
    result = await housekeeping(b.store, b.clock.now(), timedelta(days=7), b.outbox)
    assert result["files"] == 1
    assert list(b.outbox.glob("*.eml")) == [kept]


async def test_survey_ids_are_not_reused_after_an_erasure(book: Book) -> None:
    """A reused id would give a new survey the sync messageIds (and .eml name) of an erased
    one: Segment would drop its answer as a duplicate."""
    b = book
    await b.post({"type": "identify", "userId": "first", "traits": {"email": "f@example.com"}})
    _, first = await b.get("/v1/users/first")
    await b.post({"type": "delete", "userId": "first"})
    await b.post({"type": "identify", "userId": "second", "traits": {"email": "s@example.com"}})
    _, second = await b.get("/v1/users/second")
    assert second["surveys"][0]["id"] > first["surveys"][0]["id"]


def test_every_table_is_listed_in_the_personal_data_registry() -> None:
    """A table added to the schema must say whether it holds personal data (and how erasure
    finds a person's rows in it): otherwise an erasure would silently leave it behind."""
    listed_personal = {p.table for p in personal_data.PERSONAL}
    others = set(personal_data.KEPT) | set(personal_data.NO_PERSONAL_DATA)
    assert not listed_personal & others
    tables = set(SQLModel.metadata.tables)
    assert tables - listed_personal - others == set(), "add the new table to the registry"
    assert (listed_personal | others) - tables == set(), "the registry names a missing table"
    for place in personal_data.PERSONAL:
        columns = set(SQLModel.metadata.tables[place.table].columns.keys())
        assert place.column in columns and set(place.columns) <= columns, place
