"""The Store contract (storage/store.py): one suite over a `store` fixture, run on a SQLite
file and on PostgreSQL, through the Store's methods only (as APScheduler 4's
tests/test_datastores.py holds every data store to one contract). Every method is called
here; what each returns when there is nothing is asserted too."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from jobs.book_rules import BookRules
from jobs.clock import MovableClock
from jobs.loop_events import LoopEvents
from jobs.planning import make_planner
from settings import AlertSettings, SurveySettings, WebhookSettings
from storage.console_reads import BadCursor, Filters
from storage.deliveries import DEAD, DELIVERED, Settled
from storage.events import Message
from storage.import_store import ImportRow
from storage.migrations import LATEST
from storage.sql_store import SqlStore
from storage.store import AnswerResult, IntakePolicy, Openness, Store, SurveyState
from storage.surveys import (
    INTERRUPTED,
    INTERRUPTED_REMINDER,
    REMINDER_LEASE,
    RESTORED,
    Delivered,
    HandedOff,
    Outcome,
)

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)
AT = NOW + timedelta(hours=1)  # surveys planned at NOW are due by then
POLICY = IntakePolicy(BookRules(), make_planner(SurveySettings()))


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[SqlStore]:
    async with SqlStore(db_url, MovableClock(NOW)) as opened:
        yield opened


def identify(n: int, user_id: str, **traits: Any) -> Message:
    traits = {"email": f"{user_id}@example.com",
              "createdAt": (NOW - timedelta(days=3)).isoformat(), **traits}
    return Message(message_id=f"m-{user_id}-{n}", type="identify", user_id=user_id,
                   anonymous_id=None, timestamp=NOW, traits=traits)


async def sent_survey(store: Store, user_id: str, n: int = 0) -> str:
    """A user identified, their survey claimed and recorded sent; its token."""
    await store.record([identify(n, user_id)], POLICY)
    [claim] = [c for c in await store.claim_due(AT, "me", 50, LEASE) if c.user_id == user_id]
    assert await store.settle([], NOW, owner="me", lease=LEASE, handoff=[claim.id]) == {claim.id}
    await store.settle([Outcome(claim.id, user_id, SurveyState.SENT, "sent",
                                expires_at=NOW + timedelta(days=30))], NOW, owner="me",
                       lease=LEASE)
    return claim.token


async def test_an_empty_store_answers_with_nothing(store: SqlStore) -> None:
    assert await store.record([], POLICY) == []
    assert store.writer_alive() and store.queued() == (0, 0)
    assert await store.claim_due(AT, "me", 10, LEASE) == []
    assert await store.earliest_due() is None
    assert await store.lease_owners() == []
    assert await store.release("me") == (0, 0)
    assert await store.release(now=NOW) == (0, 0)
    assert await store.release_unsent("me") == 0
    assert await store.handed_off("me") == HandedOff([], [])
    assert await store.expire(NOW) == 0
    assert await store.existing_surveys({1, 2}) == set()
    assert await store.sent_per_account(["acme"], NOW - timedelta(days=1)) == {}
    assert await store.address_last_surveyed(["k"], NOW - timedelta(days=1)) == {}
    assert await store.survey("no-such-token") is None
    assert await store.survey("bad token\x00") is None
    assert await store.answer("no-such-token", 9, None, NOW) is AnswerResult.CLOSED
    assert await store.user("nobody") is None and not await store.user_exists("nobody")
    assert await store.account("nothing") is None
    assert await store.decisions("nobody") is None
    assert (await store.nps())["responses"] == 0
    assert (await store.nps("account"))["groups"] == []
    assert await store.sync_lease_holder() is None
    assert await store.last_sync() == (None, None)
    chunk = await store.pending_chunk(100, 0, with_accounts=True)
    assert chunk.answers == [] and chunk.newest == {}
    assert await store.pending_unsubscribes(10) == []
    assert await store.ping(5.0)
    assert await store.schema_version() == LATEST
    assert await store.prune(NOW, 100) == 0
    assert (await store.status(NOW))["users"] == 0
    figures = await store.dashboard(NOW)
    assert figures["overall"]["responses"] == 0 and figures["trend"] == []
    assert await store.responses(Filters()) == ([], None)
    assert await store.account_names(["nothing"]) == {}
    assert await store.accounts_page() == ([], 0)
    assert await store.account_members("nothing") == []
    assert await store.search_users("") == [] and await store.search_users("nobody") == []
    queue = await store.send_queue(NOW)
    assert (queue["total_due"], queue["due"], queue["skipped"]) == (0, [], [])
    assert await store.find_session("no-such-session", NOW) is None
    await store.delete_session("no-such-session")


async def test_record_flags_duplicates_and_plans_a_survey(store: SqlStore) -> None:
    assert await store.record([identify(1, "u1")], POLICY) == [True]
    assert await store.record([identify(1, "u1"), identify(2, "u1")], POLICY) == [False, True]
    assert await store.user_exists("u1")
    user = await store.user("u1")
    assert user is not None and user["surveys"][0]["state"] == SurveyState.PENDING
    due = await store.earliest_due()
    assert due is not None and NOW <= due < AT
    decisions = await store.decisions("u1")
    assert decisions and decisions[0]["outcome"] == "scheduled"
    # Forgetting messageIds: they are new again afterwards.
    assert await store.prune(NOW + timedelta(days=8), 1) == 2
    assert await store.record([identify(1, "u1")], POLICY) == [True]


async def test_claims_are_exclusive_and_released_by_owner_or_lease(store: SqlStore) -> None:
    await store.record([identify(0, f"u{i}") for i in range(3)], POLICY)
    mine = await store.claim_due(AT, "me", 2, LEASE)
    assert len(mine) == 2 and await store.lease_owners() == ["me"]
    theirs = await store.claim_due(AT, "other", 10, LEASE)
    assert len(theirs) == 1 and not {c.id for c in mine} & {c.id for c in theirs}
    # A hand-off by someone who does not hold the claim is refused.
    assert await store.settle([], NOW, owner="other", lease=LEASE,
                              handoff=[mine[0].id]) == set()
    assert await store.settle([], NOW, owner="me", lease=LEASE,
                              handoff=[mine[0].id]) == {mine[0].id}
    assert await store.handed_off("me") == HandedOff([mine[0].id], [])
    assert await store.release_unsent("me") == 1  # the one not handed off
    assert await store.release("me") == (0, 1)  # the handed-off one fails, never resent
    assert await store.release(now=AT + LEASE + timedelta(seconds=1)) == (1, 0)
    assert await store.lease_owners() == []
    # `npsd why` says what became of the interrupted one, and why.
    why = await store.decisions(mine[0].user_id)
    assert why is not None and {"outcome": "failed", "reason": INTERRUPTED,
                                "survey_id": mine[0].id}.items() <= why[-1].items()


async def sent_with_reminder(store: Store, user_id: str, due: datetime) -> int:
    """A user's survey recorded sent with a reminder due at `due`; the survey's id."""
    await store.record([identify(0, user_id)], POLICY)
    [claim] = [c for c in await store.claim_due(AT, "me", 50, LEASE) if c.user_id == user_id]
    assert await store.settle([], NOW, owner="me", lease=LEASE, handoff=[claim.id]) == {claim.id}
    await store.settle([Outcome(claim.id, user_id, SurveyState.SENT, "sent",
                                expires_at=NOW + timedelta(days=30), reminder_due_at=due)],
                       NOW, owner="me", lease=LEASE)
    return claim.id


async def test_a_reminder_is_leased_until_its_own_hand_off(store: SqlStore) -> None:
    """A reminder counts as sent only from its own hand-off: one claimed by a process that
    died before that is sent by another once the lease runs out; the dead one's late mark
    is refused, and a reminder handed off is never claimed again."""
    due = NOW + timedelta(days=3)
    survey_id = await sent_with_reminder(store, "u1", due)
    [dead] = await store.claim_due(due, "dead", 10, LEASE)
    assert dead.reminder and dead.id == survey_id
    assert await store.claim_due(due, "alive", 10, LEASE) == []  # leased
    assert await store.claim_due(due + LEASE * 2, "alive", 10, LEASE) == []  # not renewed,
    later = due + REMINDER_LEASE + timedelta(seconds=1)  # but long
    [alive] = await store.claim_due(later, "alive", 10, LEASE)
    assert alive.id == survey_id and alive.reminder
    assert await store.settle([], later, owner="dead", lease=LEASE, reminders=[survey_id]) == set()
    assert await store.settle([], later, owner="alive", lease=LEASE,
                              reminders=[survey_id]) == {survey_id}
    await store.settle([Outcome(survey_id, "u1", SurveyState.SENT, "reminder sent",
                                reminder=True)], later, owner="alive", lease=LEASE)
    assert await store.claim_due(later + timedelta(days=1), "alive", 10, LEASE) == []
    user = await store.user("u1")
    assert user is not None and user["surveys"][0]["reminder_sent_at"] is not None
    assert user["surveys"][0]["state"] == SurveyState.SENT


async def test_a_dead_holders_reminders_are_free_at_once_or_interrupted(
        store: SqlStore) -> None:
    """A holder seen dead: its reminder claims not handed off are free for another process
    at once; one whose SMTP transaction had started is recorded "reminder failed"
    (interrupted) and never sent again, the survey itself staying sent."""
    due = NOW + timedelta(days=3)
    marked = await sent_with_reminder(store, "u1", due)
    unmarked = await sent_with_reminder(store, "u2", due)
    assert {c.id for c in await store.claim_due(due, "dead", 10, LEASE)} == {marked, unmarked}
    assert await store.settle([], due, owner="dead", lease=LEASE,
                              reminders=[marked]) == {marked}
    assert await store.lease_owners(due) == ["dead"]
    assert await store.handed_off("dead") == HandedOff([], [marked])
    assert await store.release("dead", due) == (1, 1)
    assert await store.lease_owners(due) == []
    [again] = await store.claim_due(due, "alive", 10, LEASE)
    assert again.id == unmarked and again.reminder
    user = await store.user("u1")
    assert user is not None and user["surveys"][0]["state"] == SurveyState.SENT
    why = await store.decisions("u1")
    assert why is not None and (why[-1]["outcome"], why[-1]["reason"]) == (
        "reminder failed", INTERRUPTED_REMINDER)
    later = due + REMINDER_LEASE + timedelta(seconds=1)  # alive's claim ran out
    assert [c.id for c in await store.claim_due(later, "alive", 10, LEASE)] == [unmarked]


async def test_a_marked_reminder_whose_lease_ran_out_is_interrupted(store: SqlStore) -> None:
    """A holder on another host is only taken over by expiry: the same rule applies then."""
    due = NOW + timedelta(days=3)
    survey_id = await sent_with_reminder(store, "u1", due)
    await store.claim_due(due, "elsewhere", 10, LEASE)
    assert await store.settle([], due, owner="elsewhere", lease=LEASE,
                              reminders=[survey_id]) == {survey_id}
    assert await store.release(now=due + timedelta(minutes=1)) == (0, 0)  # still leased
    assert await store.release(now=due + REMINDER_LEASE + timedelta(seconds=1)) == (0, 1)
    assert await store.claim_due(due + timedelta(days=1), "alive", 10, LEASE) == []


async def test_a_reminder_the_mail_server_refused_is_not_recorded_sent(
        store: SqlStore) -> None:
    due = NOW + timedelta(days=3)
    survey_id = await sent_with_reminder(store, "u1", due)
    await store.claim_due(due, "me", 10, LEASE)
    assert await store.settle([], due, owner="me", lease=LEASE,
                              reminders=[survey_id]) == {survey_id}
    await store.settle([Outcome(survey_id, "u1", SurveyState.FAILED, "failed: 550",
                                reminder=True)], due, owner="me", lease=LEASE)
    user = await store.user("u1")
    assert user is not None and user["surveys"][0]["reminder_sent_at"] is None
    assert await store.lease_owners(due) == []
    assert await store.claim_due(due + timedelta(days=1), "me", 10, LEASE) == []


async def test_an_outbox_decides_what_a_dead_owners_reminders_became(store: SqlStore) -> None:
    """File backend: a marked reminder whose .eml was written is sent; one whose .eml was
    not is free again (sent later, exactly once)."""
    due = NOW + timedelta(days=3)
    written = await sent_with_reminder(store, "u1", due)
    unwritten = await sent_with_reminder(store, "u2", due)
    await store.claim_due(due, "dead", 10, LEASE)
    assert await store.settle([], due, owner="dead", lease=LEASE,
                              reminders=[written, unwritten]) == {written, unwritten}
    assert await store.release("dead", due, delivered=Delivered(
        frozenset(), reminders=frozenset({written}))) == (1, 0)
    assert [c.id for c in await store.claim_due(due, "alive", 10, LEASE)] == [unwritten]
    why = await store.decisions("u1")
    assert why is not None and (why[-1]["outcome"], why[-1]["reason"]) == (
        "reminder sent", RESTORED)
    user = await store.user("u2")
    assert user is not None and user["surveys"][0]["reminder_sent_at"] is None


async def test_reminder_claims_come_back_on_a_clean_stop_and_a_skip_is_final(
        store: SqlStore) -> None:
    due = NOW + timedelta(days=3)
    kept = await sent_with_reminder(store, "u1", due)
    skipped = await sent_with_reminder(store, "u2", due)
    assert {c.id for c in await store.claim_due(due, "me", 10, LEASE)} == {kept, skipped}
    await store.record_outcomes([Outcome(skipped, "u2", SurveyState.SKIPPED, "skipped: x",
                                         reminder=True)], due)
    assert await store.release_unsent("me") == 1
    assert [c.id for c in await store.claim_due(due, "next", 10, LEASE)] == [kept]
    user = await store.user("u2")
    assert user is not None and user["surveys"][0]["reminder_sent_at"] is None


async def test_an_outbox_decides_what_a_dead_owners_hand_offs_became(store: SqlStore) -> None:
    """File backend: a hand-off whose .eml was written is sent; one whose .eml was not is
    back to pending (sent later, exactly once); nothing is failed."""
    await store.record([identify(0, f"u{i}") for i in range(3)], POLICY)
    claims = await store.claim_due(AT, "dead", 10, LEASE)
    written, unwritten, waiting = (c.id for c in claims)
    assert await store.settle([], NOW, owner="dead", lease=LEASE,
                              handoff=[written, unwritten]) == {written, unwritten}
    assert sorted((await store.handed_off("dead")).surveys) == sorted([written, unwritten])
    expires = NOW + timedelta(days=30)
    assert await store.release("dead", NOW, delivered=Delivered(
        frozenset({written}), expires_at=expires)) == (2, 0)
    assert await store.handed_off("dead") == HandedOff([], [])
    assert await store.lease_owners() == []
    states = {c.id: await store.user(c.user_id) for c in claims}
    assert [states[i]["surveys"][0]["state"] for i in (written, unwritten, waiting)] == [
        "sent", "pending", "pending"]
    why = await store.decisions(claims[0].user_id)
    assert why is not None and (why[-1]["outcome"], why[-1]["reason"]) == ("sent", RESTORED)
    again = await store.claim_due(AT, "alive", 10, LEASE)
    assert sorted(c.id for c in again) == sorted([unwritten, waiting])


async def test_skipped_and_deferred_outcomes_and_email_keys(store: SqlStore) -> None:
    await store.record([identify(0, "u1"), identify(0, "u2")], POLICY)
    a, b = await store.claim_due(AT, "me", 10, LEASE)
    await store.set_email_keys([(a.id, "key-a"), (b.id, None)])
    later = NOW + timedelta(hours=2)
    await store.record_outcomes([Outcome(a.id, a.user_id, SurveyState.PENDING, "deferred",
                                         due_at=later),
                                 Outcome(b.id, b.user_id, SurveyState.SKIPPED, "skipped: x")],
                                NOW)
    assert await store.earliest_due() == later
    user = await store.user(b.user_id)
    assert user is not None and user["surveys"][0]["state"] == SurveyState.SKIPPED


async def test_a_sent_survey_is_answered_revised_and_expires(store: SqlStore) -> None:
    token = await sent_survey(store, "u1")
    survey = await store.survey(token)
    assert survey is not None and survey.openness(NOW) is Openness.OPEN
    assert await store.existing_surveys({survey.id, survey.id + 99}) == {survey.id}
    assert await store.sent_per_account(["none"], NOW - timedelta(days=1)) == {}
    assert await store.answer(token, 9, "great", NOW) is AnswerResult.RECORDED
    assert await store.answer(token, 10, None, NOW) is AnswerResult.RECORDED  # revised
    survey = await store.survey(token)
    assert survey is not None and survey.openness(NOW) is Openness.ANSWERED
    assert (survey.score, survey.state) == (10, SurveyState.ANSWERED)
    report = await store.nps()
    assert (report["responses"], report["promoters"], report["nps"]) == (1, 1, 100.0)
    later = NOW + timedelta(days=31)
    assert await store.answer(token, 3, None, later) is AnswerResult.CLOSED
    assert survey.openness(later) is Openness.CLOSED


async def test_unanswered_surveys_expire(store: SqlStore) -> None:
    token = await sent_survey(store, "u1")
    assert await store.expire(NOW + timedelta(days=29)) == 0
    assert await store.expire(NOW + timedelta(days=31)) == 1
    survey = await store.survey(token)
    assert survey is not None and survey.state == SurveyState.EXPIRED
    assert survey.openness(NOW) is Openness.CLOSED


async def test_unsubscribe_is_idempotent_and_pending_for_sync(store: SqlStore) -> None:
    await store.record([identify(0, "u1")], POLICY)
    assert await store.unsubscribe("u1", NOW)
    assert not await store.unsubscribe("u1", NOW)
    assert await store.claim_due(AT, "me", 10, LEASE) == []  # its survey was cancelled
    assert await store.pending_unsubscribes(10) == [("u1", NOW)]
    await store.mark_unsubscribes_synced(["u1"])
    assert await store.pending_unsubscribes(10) == []


async def test_erase_leaves_nothing_readable(store: SqlStore) -> None:
    token = await sent_survey(store, "gone")
    erased: list[list[int]] = []
    await store.erase("gone", IntakePolicy(BookRules(), None, on_erased=erased.append))
    assert len(erased) == 1 and len(erased[0]) == 1
    assert await store.user("gone") is None and await store.survey(token) is None
    assert not await store.user_exists("gone")


async def test_imported_answers_are_present_the_second_time(store: SqlStore) -> None:
    assert await store.import_answers([], "csv", NOW, sync=False) == []
    rows = [ImportRow(2, "u1", "u1@example.com", 9, None, NOW - timedelta(days=1), "k1"),
            ImportRow(3, None, "new@example.com", 3, "no", NOW - timedelta(days=2), "k2"),
            ImportRow(4, "u1", None, 9, None, NOW - timedelta(days=1), "k1")]
    dry = await store.import_answers(rows, "csv", NOW, sync=True, write=False)
    assert [o.outcome for o in dry] == ["imported", "imported", "present"]
    assert (await store.nps())["responses"] == 0
    done = await store.import_answers(rows, "csv", NOW, sync=True)
    assert [(o.outcome, o.new_user) for o in done] == [
        ("imported", "u1"), ("imported", done[1].new_user), ("present", None)]
    assert str(done[1].new_user).startswith("npsd-email-")
    assert [o.outcome for o in await store.import_answers(rows, "csv", NOW, sync=True)] == \
        ["present"] * 3
    assert (await store.nps())["responses"] == 2
    await store.erase("u1", POLICY)
    assert [o.outcome for o in await store.import_answers(
        [rows[0]._replace(key="k3")], "csv", NOW, sync=True)] == ["suppressed"]


async def test_the_sync_lease_and_checkpoints(store: SqlStore) -> None:
    token = await sent_survey(store, "u1")
    assert await store.answer(token, 2, "meh", NOW) is AnswerResult.RECORDED
    assert await store.acquire_sync_lease("a", NOW, LEASE)
    assert not await store.acquire_sync_lease("b", NOW, LEASE)
    assert await store.sync_lease_holder() == "a"
    assert await store.renew_sync_lease("a", NOW, LEASE)
    assert not await store.renew_sync_lease("b", NOW, LEASE)
    chunk = await store.pending_chunk(100, 0, with_accounts=False)
    [pending] = chunk.answers
    assert (await store.pending_chunk(100, pending.survey_id, with_accounts=False)).answers == []
    await store.checkpoint([(pending.survey_id, pending.revision)], [], NOW,
                           renew=("a", LEASE))
    assert (await store.pending_chunk(100, 0, with_accounts=False)).answers == []
    await store.release_sync_lease("a", NOW, "ok", 1, 0)
    assert await store.sync_lease_holder() is None
    assert await store.last_sync() == (NOW, NOW)  # started, succeeded
    # A dead holder's lease is broken for the next run.
    assert await store.acquire_sync_lease("dead", NOW, LEASE)
    await store.break_sync_lease("dead")
    assert await store.sync_lease_holder() is None


async def test_accounts_and_their_figures(store: SqlStore) -> None:
    token = await sent_survey(store, "u1")
    await store.record([Message(message_id="g-1", type="group", user_id="u1",
                                anonymous_id=None, timestamp=NOW, group_id="acme",
                                traits={"name": "Acme"})], POLICY)
    assert await store.answer(token, 0, None, NOW) is AnswerResult.RECORDED
    account = await store.account("acme")
    assert account is not None
    figures = await store.account_figures(["acme", "none"])
    assert set(figures) == {"acme", "none"}
    assert figures["none"]["responses"] == 0
    assert (await store.nps("month"))["groups"]
    assert (await store.status(NOW))["users"] == 1


async def test_the_writer_stops_with_the_store(db_url: str) -> None:
    store = SqlStore(db_url, MovableClock(NOW))
    async with store:
        assert store.writer_alive()
    assert not store.writer_alive()


async def test_the_console_reads(store: SqlStore) -> None:
    tokens = [await sent_survey(store, u, i) for i, u in enumerate(["ann", "bob", "cy"])]
    await store.record([Message(message_id=f"g-{u}", type="group", user_id=u,
                                anonymous_id=None, timestamp=NOW, group_id="acme",
                                traits={"name": "Acme"}) for u in ("ann", "bob")], POLICY)
    later = NOW + timedelta(days=8)
    for token, score, at in zip(tokens, (10, 4, 9), (NOW, NOW, later), strict=True):
        assert await store.answer(token, score, "slow" if score < 7 else None, at) \
            is AnswerResult.RECORDED
    figures = await store.dashboard(later, "week")
    assert figures["overall"] == await store.nps()
    assert [p["responses"] for p in figures["trend"]] == [2, 1]  # two Mondays
    assert figures["last_30_days"]["responses"] == 3
    newest, cursor = await store.responses(Filters(), limit=2)
    assert [r["user_id"] for r in newest] == ["cy", "bob"] and cursor is not None
    rest, end = await store.responses(Filters(), limit=2, cursor=cursor)
    assert [r["user_id"] for r in rest] == ["ann"] and end is None
    assert rest[0]["accounts"] == ["acme"]
    assert [r["user_id"] for r in (await store.responses(Filters(category="detractor")))[0]
            ] == ["bob"]
    with pytest.raises(BadCursor):
        await store.responses(Filters(), cursor="not-a-cursor")
    assert await store.account_names(["acme", "none"]) == {"acme": "Acme"}
    await store.record([Message(message_id="g-zed", type="group", user_id="cy",
                                anonymous_id=None, timestamp=NOW, group_id="zeta",
                                traits={"name": "beta"}),
                        Message(message_id="g-none", type="group", user_id="cy",
                                anonymous_id=None, timestamp=NOW, group_id="0-unnamed")],
                       POLICY)
    rows, total = await store.accounts_page("nps", descending=True)
    assert total == 3 and [(r["groupId"], r["members"], r["nps"]) for r in rows] == [
        ("zeta", 1, 100.0), ("0-unnamed", 1, 100.0), ("acme", 2, 0.0)]
    by_name = (await store.accounts_page("name", limit=2, offset=1))[0]
    assert [(r["groupId"], r["name"]) for r in by_name] == [("acme", "Acme"), ("zeta", "beta")]
    with pytest.raises(ValueError):
        await store.accounts_page("email")
    assert [m["user_id"] for m in await store.account_members("acme")] == ["ann", "bob"]
    assert [u["user_id"] for u in await store.search_users("bob@")] == ["bob"]
    assert [u["user_id"] for u in await store.search_users("cy")] == ["cy"]
    await store.record([identify(7, "dan")], POLICY)
    queue = await store.send_queue(NOW)
    assert queue["total_due"] == 1 and queue["due"][0]["user_id"] == "dan"
    assert queue["due"][0]["why"]
    # By surname too (a lastName trait), whichever case its first letter is typed in.
    await store.record([identify(8, "eve", firstName="Eve", lastName="Zhou")], POLICY)
    for q in ("Zhou", "zhou", "Zh", "Eve"):
        assert [u["user_id"] for u in await store.search_users(q)] == ["eve"], q


async def test_console_sessions_end_by_logout_or_expiry(store: SqlStore) -> None:
    await store.create_session("sid", "token-hash", "csrf", NOW, NOW + timedelta(hours=1))
    found = await store.find_session("sid", NOW)
    assert found is not None and (found.token_hash, found.csrf) == ("token-hash", "csrf")
    assert await store.find_session("sid", NOW + timedelta(hours=1)) is None  # expired
    await store.delete_session("sid")
    assert await store.find_session("sid", NOW) is None


LOOP = LoopEvents(AlertSettings(email_to=("cs@acme.example",)),
                  WebhookSettings(urls=("https://r.example/hook",), secret="whsec_x"))


async def test_answers_unsubscribes_and_erasures_fill_the_outbox(store: SqlStore) -> None:
    assert await store.claim_deliveries(AT, "me", 10, LEASE) == []
    assert await store.delivery_lease_owners() == []
    assert (await store.delivery_counts(NOW))["pending"] == 0
    token = await sent_survey(store, "u1")
    assert await store.answer(token, 3, "slow", NOW, LOOP) is AnswerResult.RECORDED
    assert await store.answer(token, 2, "slow", NOW, LOOP) is AnswerResult.RECORDED  # no alert
    assert await store.unsubscribe("u1", NOW, LOOP)
    claimed = await store.claim_deliveries(NOW, "me", 10, LEASE)
    assert [(c.channel, c.event) for c in claimed] == [
        ("webhook", "survey.answered"), ("email", "alert"), ("webhook", "survey.answered"),
        ("webhook", "user.unsubscribed")]
    assert await store.delivery_lease_owners() == ["me"]
    assert await store.claim_deliveries(NOW, "other", 10, LEASE) == []  # leased
    assert await store.release_deliveries("me") == 4
    claimed = await store.claim_deliveries(NOW, "other", 10, LEASE)
    await store.settle_deliveries([Settled(claimed[0].id, DELIVERED, 200),
                                   Settled(claimed[1].id, DEAD, 404, "HTTP 404")], NOW, "other")
    counts = await store.delivery_counts(NOW)
    assert (counts["delivered"], counts["dead"], counts["pending"]) == (1, 1, 2)
    assert await store.replay_dead(NOW, since=NOW + timedelta(seconds=1)) == 0
    assert await store.replay_dead(NOW, since=None) == 1
    assert await store.prune_deliveries(NOW) == 0  # delivered at NOW: not before it
    assert await store.prune_deliveries(NOW + timedelta(days=8)) == 1
    await store.erase("u1", IntakePolicy(BookRules(), None, loop=LOOP))
    counts = await store.delivery_counts(NOW)
    assert (counts["pending"], counts["dead"]) == (1, 0)  # only user.erased is left
    [erased] = await store.claim_deliveries(AT, "x", 10, LEASE)
    assert (erased.event, erased.body.endswith('"data":{"userId":"u1"}}')) == (
        "user.erased", True)


def test_this_suite_calls_every_store_method() -> None:
    """A method added to the Store without a contract test here fails this."""
    source = Path(__file__).read_text(encoding="utf-8")
    methods = {n for n, v in vars(Store).items() if callable(v) and not n.startswith("_")}
    assert methods and not {m for m in methods if f"store.{m}(" not in source}
