"""Sync-back to a real HTTP server playing Segment's Tracking API: exactly once per answer
revision, newest answer wins, storms survived, bad messages isolated and recorded."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa

from daemon.config import SegmentSettings
from jobs.clock import MovableClock
from jobs.scheduler import sync_trigger
from jobs.segment_client import RetryPolicy
from jobs.sync import Syncer
from jobs.sync_batching import message_id
from storage.sql_store import SqlStore
from storage.sqlutil import SURVEYS, SYNC_FAILURES, USERS
from storage.states import AnswerResult
from tests.fakes.segment_api import FakeSegment

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


class World:
    def __init__(self, store: SqlStore, seg: FakeSegment, session: aiohttp.ClientSession,
                 clock: MovableClock) -> None:
        self.store, self.db = store, store.db
        self.seg, self.session, self.clock = seg, session, clock
        self.settings = SegmentSettings(write_key="wk", endpoint=seg.url)
        self.sleeps: list[float] = []
        self.tokens: dict[int, str] = {}  # survey id → its link's token

    def syncer(self, owner: str = "test-1") -> Syncer:
        async def sleep(seconds: float) -> None:
            self.sleeps.append(seconds)

        return Syncer(self.store, self.clock, owner, lambda: self.settings, self.session,
                      policy=RetryPolicy(max_attempts=8, base_s=0.01, cap_s=0.05,
                                         timeout_s=2.0), sleep=sleep)

    async def answered(self, user_id: str, score: int, comment: str | None = None,
                       at: datetime | None = None) -> int:
        """A user with a sent survey, answered through the same code the page uses."""
        now = at or self.clock.now()
        async with self.db.write() as conn:
            if not await self._exists(conn, user_id):
                await conn.execute(sa.insert(USERS).values(
                    user_id=user_id, email=f"{user_id}@x.io", updated_at=now, traits="{}",
                    trait_times="{}"))
            token = f"tok-{user_id}-{now.timestamp()}".replace(".", "_")
            result = await conn.execute(sa.insert(SURVEYS).values(
                user_id=user_id, token=token, state="sent",
                due_at=now, created_at=now, sent_at=now,
                expires_at=now + timedelta(days=30)).returning(SURVEYS.c.id))
            survey_id = int(result.scalar_one())
        self.tokens[survey_id] = token
        assert await self.store.answer(token, score, comment, now) == AnswerResult.RECORDED
        return survey_id

    @staticmethod
    async def _exists(conn: Any, user_id: str) -> bool:
        row = (await conn.execute(sa.select(USERS.c.user_id).where(USERS.c.user_id == user_id))
               ).first()
        return row is not None

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.seg.messages if m["type"] == kind]


@pytest.fixture
async def world(db_url: str) -> AsyncIterator[World]:
    clock = MovableClock(T0)
    async with (SqlStore(db_url, clock) as store, FakeSegment("wk") as seg,
                aiohttp.ClientSession() as session):
        yield World(store, seg, session, clock)


async def test_every_answer_once_with_the_three_traits(world: World) -> None:
    # Answered at T0 itself: the clock runs on from T0 while the fixture sets up.
    await world.answered("u1", 9, "love it", at=T0)
    await world.answered("u2", 3, at=T0)
    start = world.clock.now()
    report = await world.syncer().run("test")
    assert report["result"] == "ok"
    identifies = {m["userId"]: m for m in world.of_type("identify")}
    assert identifies["u1"]["traits"] == {"NPS_rating": 9, "NPS_comment": "love it",
                                          "NPS_date": identifies["u1"]["timestamp"]}
    assert identifies["u1"]["traits"]["NPS_date"].startswith("2026-03-02T10:00:00")
    assert identifies["u2"]["traits"]["NPS_comment"] == ""
    assert identifies["u1"]["context"]["library"]["name"] == "npsd"
    assert len(world.of_type("track")) == 2
    assert world.of_type("track")[0]["event"] == "NPS Survey Answered"
    # Every batch body carries sentAt, the clock's time when sent, so Segment can correct
    # clock skew (ISO 8601 in UTC with milliseconds, as Segment's libraries write it).
    assert len(world.seg.sent_at) == len(world.seg.batches) >= 1
    for sent_at in world.seg.sent_at:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", sent_at)
        assert start - timedelta(milliseconds=1) <= datetime.fromisoformat(sent_at) <= (
            world.clock.now())
    # A second sync sends nothing: the checkpoint moved.
    assert (await world.syncer().run("test"))["sent"] == 0
    assert world.seg.duplicates() == []


async def test_revised_answer_is_sent_again_with_new_values(world: World) -> None:
    survey_id = await world.answered("u1", 4)
    await world.syncer().run("test")
    world.clock.advance(timedelta(hours=1))
    assert await world.store.answer(world.tokens[survey_id], 10, "changed my mind",
                                    world.clock.now()) == AnswerResult.RECORDED
    await world.syncer().run("test")
    identifies = world.of_type("identify")
    assert [m["traits"]["NPS_rating"] for m in identifies] == [4, 10]
    assert identifies[0]["messageId"] != identifies[1]["messageId"]
    assert world.seg.duplicates() == []


async def test_newest_answer_wins(world: World) -> None:
    await world.answered("u1", 2, at=T0)
    await world.answered("u1", 10, at=T0 + timedelta(days=200))
    await world.syncer().run("test")
    identifies = world.of_type("identify")
    assert [m["traits"]["NPS_rating"] for m in identifies] == [10]
    assert len(world.of_type("track")) == 2  # the history keeps both


async def test_backlog_read_in_chunks_newest_wins_across_them(world: World,
                                                               monkeypatch: Any) -> None:
    from jobs import sync as sync_module

    monkeypatch.setattr(sync_module, "CHUNK_ANSWERS", 3)
    world.settings = replace(world.settings, track_answers=False)
    await world.answered("u1", 2, at=T0)  # first chunk; not the newest: no message at all
    for i in range(7):
        await world.answered(f"v{i}", 5)
    await world.answered("u1", 9, at=T0 + timedelta(days=1))  # last chunk
    report = await world.syncer().run("test")
    assert report["result"] == "ok"
    identifies = world.of_type("identify")
    assert sorted(m["userId"] for m in identifies) == ["u1"] + [f"v{i}" for i in range(7)]
    assert [m["traits"]["NPS_rating"] for m in identifies if m["userId"] == "u1"] == [9]
    # The answer that produced no message is settled too: nothing is left behind.
    assert (await world.store.status(world.clock.now()))["sync"]["backlog"] == 0
    assert (await world.syncer().run("again"))["sent"] == 0


async def test_storms_of_429_and_500_end_delivered(world: World) -> None:
    for i in range(20):
        await world.answered(f"u{i}", i % 11)
    world.seg.fail_next(429, count=2, retry_after=0.01)
    world.seg.fail_next(500, count=3)
    report = await world.syncer().run("test")
    assert report["result"] == "ok"
    assert len(world.of_type("identify")) == 20 and world.seg.duplicates() == []
    assert len(world.sleeps) == 5


async def test_refused_message_does_not_block_the_rest(world: World) -> None:
    for i in range(10):
        survey_id = await world.answered(f"u{i}", 9)
        if i == 4:  # Segment refuses both of u4's messages (messageIds are deterministic)
            world.seg.reject_message_ids.update(
                message_id(kind, str(survey_id), "1") for kind in ("identify", "track"))
    report = await world.syncer().run("test")
    assert report["result"] == "ok" and report["failed"] == 2
    assert {m["userId"] for m in world.of_type("identify")} == {f"u{i}" for i in range(10)} - {"u4"}
    async with world.db.read() as conn:
        failures = (await conn.execute(sa.select(SYNC_FAILURES.c.user_id))).scalars().all()
    assert set(failures) == {"u4"}
    assert (await world.syncer().run("again"))["sent"] == 0  # recorded, not retried forever


async def test_wrong_write_key_fails_and_keeps_the_backlog(world: World) -> None:
    await world.answered("u1", 9)
    world.settings = replace(world.settings, write_key="wrong")
    report = await world.syncer().run("test")
    assert report["result"] == "unauthorized"
    world.settings = replace(world.settings, write_key="wk")
    assert (await world.syncer().run("test"))["sent"] >= 1


async def test_unsubscribe_and_group_nps_and_trait_names(world: World) -> None:
    world.settings = replace(world.settings, rating_trait="score", comment_trait="why",
                             date_trait="when")
    await world.answered("u1", 10)
    async with world.db.write() as conn:
        await conn.execute(sa.text(
            "INSERT INTO memberships (user_id, group_id, active, changed_at) "
            "VALUES ('u1', 'acme', :t, :now)"), {"t": True, "now": T0})
        await conn.execute(sa.text(
            "INSERT INTO accounts (group_id, traits, trait_times, updated_at) "
            "VALUES ('acme', '{}', '{}', :now)"), {"now": T0})
    assert await world.store.unsubscribe("u1", world.clock.now())
    await world.syncer().run("test")
    identifies = world.of_type("identify")
    assert {"score", "why", "when"} <= set(identifies[0]["traits"])
    assert any(m["traits"].get("NPS_unsubscribed") is True for m in identifies)
    [group] = world.of_type("group")
    assert group["groupId"] == "acme" and group["traits"]["NPS"] == 100.0


async def test_one_sync_at_a_time_across_processes(world: World) -> None:
    await world.answered("u1", 9)
    world.seg.slow_next(0.5)
    import asyncio

    first, second = await asyncio.gather(world.syncer("proc-a").run("a"),
                                         world.syncer("proc-b").run("b"))
    assert sorted([first["result"], second["result"]]) == ["busy", "ok"]
    assert len(world.of_type("identify")) == 1


@pytest.mark.parametrize(("zone", "after", "expected_utc"), [
    ("UTC", "2026-03-01T03:00:01+00:00", "2026-03-02T03:00:00+00:00"),
    ("Europe/Berlin", "2026-03-28T12:00:00+00:00", "2026-03-29T01:00:00+00:00"),  # CEST now
    ("Europe/Berlin", "2026-03-27T12:00:00+00:00", "2026-03-28T02:00:00+00:00"),  # CET
    ("Europe/Berlin", "2026-10-24T12:00:00+00:00", "2026-10-25T02:00:00+00:00"),  # back to CET
    ("America/New_York", "2026-03-07T12:00:00+00:00", "2026-03-08T07:00:00+00:00"),
    ("America/New_York", "2026-03-08T12:00:00+00:00", "2026-03-09T07:00:00+00:00"),
])
def test_daily_cron_fires_at_sync_at_across_dst(zone: str, after: str, expected_utc: str) -> None:
    trigger = sync_trigger(SegmentSettings(write_key="k", timezone=zone))
    now = datetime.fromisoformat(after)
    fire = trigger.get_next_fire_time(None, now)
    assert fire is not None and fire.astimezone(UTC) == datetime.fromisoformat(expected_utc)


async def test_status_reports_the_last_sync(world: World) -> None:
    await world.answered("u1", 9)
    await world.syncer().run("test")
    status = await world.store.status(world.clock.now())
    assert status["sync"]["last_result"] == "ok" and status["sync"]["backlog"] == 0


async def test_a_refusal_quoting_the_message_is_stored_redacted(world: World) -> None:
    survey_id = await world.answered("u1", 9, "my private words about the product")
    world.seg.reject_message_ids.update(
        message_id(kind, str(survey_id), "1") for kind in ("identify", "track"))
    world.seg.reject_reason = ("invalid trait email: Someone.Else@Example.com; comment "
                               "'my private words about the product' not allowed")
    assert (await world.syncer().run("test"))["failed"] == 2
    async with world.db.read() as conn:
        reasons = (await conn.execute(sa.select(SYNC_FAILURES.c.reason))).scalars().all()
    assert len(reasons) == 2
    assert all("[email]" in r and "example.com" not in r.casefold() for r in reasons)
    assert all("private words" not in r and "[quoted]" in r for r in reasons)


class _EraseWhileSyncing(Syncer):
    """An erasure that commits after the sync read the backlog, before the batch goes out."""

    async def _still_there(self, items: Any, remaining: Any) -> Any:
        async with self._store.db.write() as conn:
            await conn.execute(sa.delete(SURVEYS).where(SURVEYS.c.user_id == "gone"))
        return await super()._still_there(items, remaining)


async def test_an_answer_erased_during_a_sync_is_not_sent(world: World) -> None:
    await world.answered("gone", 2, "private words")
    await world.answered("stays", 9)
    syncer = _EraseWhileSyncing(world.store, world.clock, "test-1", lambda: world.settings,
                                world.session)
    report = await syncer.run("test")
    assert report["result"] == "ok"
    assert {m["userId"] for m in world.seg.messages} == {"stays"}
    assert "private words" not in str(world.seg.messages)
    async with world.db.read() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(SYNC_FAILURES))
                ).scalar_one() == 0
    assert (await world.syncer().run("again"))["sent"] == 0
