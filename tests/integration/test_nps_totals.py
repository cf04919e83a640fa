"""The running NPS totals (storage/nps_totals.py) equal a recount from the survey rows after
a mix of answers, revisions that change category, sends, membership changes, an alias merge
and erasures, on a SQLite file and on PostgreSQL; and the reports that read them agree."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from jobs.book_rules import BookRules
from jobs.clock import MovableClock
from storage import console_reads, nps_totals
from storage.dialect import POSTGRESQL
from storage.events import Message
from storage.fast_path import Values, run_async
from storage.import_store import ImportRow
from storage.migrations import LATEST, migrate
from storage.sql_store import SqlStore
from storage.store import AnswerResult, IntakePolicy
from tests.integration.test_store import LEASE, NOW, POLICY, identify, sent_survey
from tests.waiting import wait_for


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[SqlStore]:
    async with SqlStore(db_url, MovableClock(NOW)) as opened:
        yield opened


# A day's figures are the sum of its shards (Dialect.counter_shards).
_DAYS = ("SELECT day, SUM(promoters), SUM(passives), SUM(detractors), SUM(sent) FROM nps_days "
         "GROUP BY day HAVING SUM(promoters + passives + detractors + sent) > 0 ORDER BY day")


async def tables(store: SqlStore) -> tuple[list[Any], list[Any]]:
    async with store.db.read() as conn:
        days = [tuple(r) for r in await conn.execute(sa.text(
            _DAYS))]
        accounts = await _accounts(conn)
    return days, accounts


async def _accounts(conn: AsyncConnection) -> list[Any]:
    return [(*r[:5], None if r[5] is None else str(r[5])[:19], *r[6:-1], bool(r[-1]))
            for r in await conn.execute(sa.text(
                "SELECT group_id, members, promoters, passives, detractors, last_answer_at, "
                "responses, nps, name, sort_name, live FROM nps_accounts WHERE members > 0 "
                "OR responses > 0 OR live ORDER BY group_id"))]


async def recounted(store: SqlStore) -> tuple[list[Any], list[Any]]:
    """The tables rebuilt from the rows, in a transaction rolled back afterwards."""
    async with store.db.write() as conn:
        await run_async(nps_totals.rebuild(Values(store.db.dialect)), conn)
        days = [tuple(r) for r in await conn.execute(sa.text(
            _DAYS))]
        accounts = await _accounts(conn)
        await conn.rollback()
    return days, accounts


def group(n: int, user_id: str, group_id: str) -> Message:
    return Message(message_id=f"g-{user_id}-{group_id}-{n}", type="group", user_id=user_id,
                   anonymous_id=None, timestamp=NOW + timedelta(minutes=n), group_id=group_id,
                   traits={"name": group_id.title()})


def track(n: int, user_id: str, event: str, group_id: str) -> Message:
    return Message(message_id=f"t-{user_id}-{n}", type="track", user_id=user_id,
                   anonymous_id=None, timestamp=NOW + timedelta(minutes=n), event=event,
                   context_group_id=group_id)


async def test_the_totals_equal_a_recount_after_every_kind_of_change(store: SqlStore) -> None:
    clock_day = [NOW + timedelta(days=d) for d in range(4)]
    tokens = {u: await sent_survey(store, u, i) for i, u in enumerate(
        ["ann", "bob", "cy", "dee", "eve"])}
    await store.record([group(1, "ann", "acme"), group(1, "bob", "acme"),
                        group(1, "cy", "initech"), group(1, "dee", "initech"),
                        group(2, "dee", "acme"), group(1, "eve", "initech")], POLICY)
    assert await store.answer(tokens["ann"], 10, "love it", clock_day[0]) is AnswerResult.RECORDED
    assert await store.answer(tokens["bob"], 3, None, clock_day[1]) is AnswerResult.RECORDED
    assert await store.answer(tokens["cy"], 7, None, clock_day[1]) is AnswerResult.RECORDED
    assert await store.answer(tokens["dee"], 9, None, clock_day[2]) is AnswerResult.RECORDED
    assert await tables(store) == await recounted(store)
    # A revision on another day, into another category: the count moves.
    assert await store.answer(tokens["bob"], 9, "better", clock_day[3]) is AnswerResult.RECORDED
    assert await store.answer(tokens["cy"], 8, None, clock_day[3]) is AnswerResult.RECORDED
    # A member leaves an account; a new member with answers joins one.
    await store.record([track(5, "dee", "Account Removed User", "initech"),
                        group(6, "eve", "acme")], POLICY)
    assert await tables(store) == await recounted(store)
    # An alias folds an answered user into another id; a user answers after joining.
    await store.record([identify(9, "zed"), Message(
        message_id="a-1", type="alias", user_id="zed", anonymous_id=None,
        timestamp=NOW + timedelta(minutes=9), previous_id="ann")], POLICY)
    later = clock_day[2] + timedelta(hours=1)  # before bob's revision: acme's latest goes back
    assert await store.answer(tokens["eve"], 0, "no", later) is AnswerResult.RECORDED
    assert await tables(store) == await recounted(store)
    # Erasures take their answers, sends and memberships out.
    await store.erase("bob", IntakePolicy(BookRules(), None))
    await store.erase("zed", IntakePolicy(BookRules(), None))
    days, accounts = await tables(store)
    assert (days, accounts) == await recounted(store)
    assert sum(d[4] for d in days) == 3  # cy, dee, eve were sent surveys
    assert [(a[0], a[1], a[8], a[10]) for a in accounts] == [
        ("acme", 2, "Acme", True), ("initech", 2, "Initech", True)]
    # What the reports show is read from them, and agrees with a recount.
    report = await store.nps()
    assert (report["promoters"], report["passives"], report["detractors"],
            report["sent"]) == (1, 1, 1, 3)
    figures = await console_reads.dashboard(store.db, NOW + timedelta(days=4))
    assert figures["overall"] == report
    listed = {a["groupId"]: a for a in (await store.accounts_page())[0]}
    acme = await store.account_figures(["acme"])
    assert listed["acme"]["responses"] == acme["acme"]["responses"] == 2
    assert listed["acme"]["nps"] == acme["acme"]["nps"]


async def test_a_fresh_database_starts_with_empty_totals(store: SqlStore) -> None:
    assert await tables(store) == ([], [])
    assert (await store.nps())["responses"] == 0
    await store.claim_due(NOW, "me", 1, LEASE)  # nothing due: nothing moves
    assert await tables(store) == ([], [])


def test_a_day_is_the_utc_day() -> None:
    v = Values(POSTGRESQL)
    late = datetime(2026, 3, 1, 23, 30, tzinfo=UTC) + timedelta(hours=1)
    assert nps_totals._day(v, late) == "2026-03-02"


async def test_an_upgrade_to_schema_6_builds_the_totals_from_the_answers(
        store: SqlStore, db_url: str) -> None:
    tokens = [await sent_survey(store, u, i) for i, u in enumerate(["ann", "bob"])]
    await store.record([group(1, "ann", "acme"), group(1, "bob", "acme")], POLICY)
    assert await store.answer(tokens[0], 10, None, NOW) is AnswerResult.RECORDED
    assert await store.answer(tokens[1], 5, None, NOW) is AnswerResult.RECORDED
    kept = await tables(store)
    async with store.db.write() as conn:  # back to schema 5: no totals
        await conn.execute(sa.text("DROP TABLE nps_days"))
        await conn.execute(sa.text("DROP TABLE nps_accounts"))
        await conn.execute(sa.text("UPDATE npsd_schema SET version = 5"))
    assert await migrate(store.db, NOW) == (5, LATEST)
    assert await tables(store) == kept
    assert kept[1] == [("acme", 2, 1, 0, 1, kept[1][0][5], 2, 0.0, "Acme", "acme", True)]
    assert (await store.nps())["nps"] == 0.0


async def test_an_upgrade_to_schema_8_keeps_the_day_totals_in_shards(store: SqlStore) -> None:
    tokens = [await sent_survey(store, u, i) for i, u in enumerate(["ann", "bob"])]
    assert await store.answer(tokens[0], 10, None, NOW) is AnswerResult.RECORDED
    kept = await tables(store)
    async with store.db.write() as conn:  # back to schema 7: one row per day
        await conn.execute(sa.text("DROP TABLE nps_days"))
        await conn.execute(sa.text(
            "CREATE TABLE nps_days (day VARCHAR PRIMARY KEY, promoters INTEGER, "
            "passives INTEGER, detractors INTEGER, sent INTEGER)"))
        await conn.execute(sa.text("INSERT INTO nps_days VALUES (:d, 1, 0, 0, 2)"),
                           {"d": NOW.date().isoformat()})
        await conn.execute(sa.text("UPDATE npsd_schema SET version = 7"))
    assert await migrate(store.db, NOW) == (7, LATEST)
    assert await tables(store) == kept
    token = await sent_survey(store, "cy", 2)  # a send after the upgrade adds to the day
    assert await store.answer(token, 0, None, NOW) is AnswerResult.RECORDED
    assert (await store.nps())["sent"] == 3
    assert (await store.nps())["responses"] == 2


async def test_a_day_is_the_sum_of_its_shards(store: SqlStore) -> None:
    day = NOW.date().isoformat()
    async with store.db.write() as conn:
        for shard, promoters, sent in ((0, 2, 5), (7, 1, 3)):
            await conn.execute(sa.text(
                "INSERT INTO nps_days (day, shard, promoters, passives, detractors, sent) "
                "VALUES (:d, :s, :p, 0, 1, :n)"), {"d": day, "s": shard, "p": promoters,
                                                    "n": sent})
    report = await store.nps()
    assert (report["promoters"], report["detractors"], report["sent"]) == (3, 2, 8)
    last_30 = (await store.dashboard(NOW))["last_30_days"]
    assert (last_30["promoters"], last_30["detractors"], last_30["sent"]) == (3, 2, 8)


async def test_imported_answers_join_the_totals(store: SqlStore) -> None:
    token = await sent_survey(store, "ann")
    await store.record([group(1, "ann", "acme")], POLICY)
    assert await store.answer(token, 10, None, NOW) is AnswerResult.RECORDED
    old = NOW - timedelta(days=40)
    rows = [ImportRow(1, "ann", None, 2, "old", old, "k-1"),
            ImportRow(2, None, "new@example.com", 8, None, old, "k-2")]
    await store.import_answers(rows, "test", NOW, sync=False, write=True)
    days, accounts = await tables(store)
    assert (days, accounts) == await recounted(store)
    assert [d[0] for d in days] == [old.date().isoformat(), NOW.date().isoformat()]
    assert accounts[0][:5] == ("acme", 1, 1, 0, 1)  # ann's imported detractor counts
    assert (await store.nps())["responses"] == 3


_WAITING = ("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'")


@pytest.mark.postgres
async def test_a_recount_waits_for_a_concurrent_change_of_the_account(pg_url: str) -> None:
    """Per-key intake locks let two transactions change one account's totals at once: an
    answer (or another intake) adds to them while an intake recounts the account after a
    membership change. The recount must see the addition, not overwrite it."""
    async with SqlStore(pg_url, MovableClock(NOW)) as store:
        tokens = {u: await sent_survey(store, u, i) for i, u in enumerate(["ann", "bob"])}
        await store.record([group(1, "ann", "acme"), group(1, "bob", "acme")], POLICY)
        assert await store.answer(tokens["ann"], 10, None, NOW) is AnswerResult.RECORDED
        v = Values(POSTGRESQL)
        async with store.db.write() as adding:  # bob's answer, not committed yet
            row = (await adding.execute(sa.text(
                "UPDATE surveys SET score = 9, answered_at = :at WHERE user_id = 'bob' "
                "RETURNING sent_at"), {"at": NOW})).one()
            bob = nps_totals.Counted("bob", row[0])
            await run_async(nps_totals.record_change(v, [bob], [bob.answered(9, NOW)]), adding)

            async def recount() -> None:
                async with store.db.write() as conn:
                    await run_async(nps_totals.refresh_accounts(v, ["acme"]), conn)

            task = asyncio.ensure_future(recount())

            async def blocked() -> bool:
                async with store.db.read() as conn:
                    return bool((await conn.execute(sa.text(_WAITING))).scalar())

            await wait_for(blocked, timeout=10, what="the recount waiting on a lock")
        await asyncio.wait_for(task, timeout=10)
        _, accounts = await tables(store)
        assert accounts == (await recounted(store))[1]
        assert [a[:3] for a in accounts if a[0] == "acme"] == [("acme", 2, 2)]
