"""A SIGKILL during dispatch costs at most one survey per open SMTP connection, never a
duplicate: two `npsd run` processes on one PostgreSQL, and one on SQLite started again after
each kill, send to a real aiosmtpd sink that holds every message a moment, so each kill lands
inside SMTP transactions. After every kill the dead process's claims are taken back: those
whose own SMTP transaction had started (at most `email.smtp.max_connections`) are recorded
failed "interrupted", with the reason in `npsd why`; the rest go back to the queue and are
sent. Every other kill lands in a run of reminders instead (surveys sent earlier, their
reminder due): the same rule holds for them, an interrupted one recorded "reminder failed".
With the file backend a kill costs nothing: every survey is written exactly once."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from storage.surveys import INTERRUPTED, INTERRUPTED_REMINDER
from tests.fakes.smtp_sink import SmtpSink
from tests.harness import Daemon
from tests.reliability.support import (
    audit_surveys,
    email_tokens,
    outbox_tokens,
    report,
    rows,
    seed,
    survey_ids_in,
    survey_states,
    unfinished_surveys,
    wait_until,
)

MAX_CONNECTIONS = 3
HOLD_S = 0.02  # the sink holds each message's DATA this long: kills land mid-transaction
TOP_UP = 120  # surveys falling due before each kill, so that every kill interrupts a run
PG_KILLS = 5
SQLITE_KILLS = 4
FILE_KILLS = 2
TAKE_BACK_S = 20  # a same-host dead process's claims come back on a survivor's next tick


@dataclass
class Kills:
    """What each kill cost: surveys (or reminders) recorded interrupted, and claims the
    victim held."""
    interrupted: list[int] = field(default_factory=list)
    held: list[tuple[int, int]] = field(default_factory=list)  # (claims, handed off)
    next_user: int = 0
    reminder_users: int = 0
    reminder_kills: int = 0


def npsd(tmp_path: Path, name: str, url: str, sink: SmtpSink | None) -> Daemon:
    d = Daemon(tmp_path / name, url, log={"format": "json", "level": "warning"},
               survey={"max_delay": 0})
    if sink is not None:
        d.sections["email"] = {"backend": "smtp"}
        d.sections["email.smtp"] = {"host": sink.host, "port": sink.port, "security": "none",
                                    "timeout": "10s", "max_connections": MAX_CONNECTIONS}
    return d


async def _held(url: str, pid: int, reminders: bool = False) -> tuple[int, int]:
    """(claims, handed off) of the process `pid`: surveys, or reminders."""
    [(claims, handed)] = await rows(
        url, "SELECT count(*), count(reminder_sent_at) FROM surveys "
        "WHERE reminder_due_at IS NOT NULL AND lease_owner LIKE ?" if reminders else
        "SELECT count(*), count(handoff_at) FROM surveys "
        "WHERE state = 'sending' AND lease_owner LIKE ?", f"%:{pid}:%")
    return int(claims), int(handed)


async def _interrupted(url: str) -> int:
    [(n,)] = await rows(url, "SELECT count(*) FROM surveys WHERE (state = 'failed' AND "
                        "last_error = ?) OR (state = 'sent' AND last_error = ?)", INTERRUPTED,
                        INTERRUPTED_REMINDER)
    return int(n)


async def kill_mid_dispatch(victims: list[Daemon], url: str, kills: Kills,
                            restart: bool) -> Daemon:
    """Make surveys due, SIGKILL the first of `victims` seen with a survey in an SMTP
    transaction, wait until its claims are taken back (by another process, or by itself
    started again with `restart`) and note what the kill cost. Returns the one killed."""
    reminders = len(kills.interrupted) % 2 == 1
    if reminders:  # once the surveys are out, so that the kill lands among reminders
        await wait_until(lambda: _no_surveys_left(url), timeout=30, interval=0.05,
                         what="the surveys sent before the reminders")
        await seed(url, TOP_UP, first=kills.reminder_users, reminders=True)
        kills.reminder_users += TOP_UP
        kills.reminder_kills += 1
    else:
        await seed(url, TOP_UP, first=kills.next_user)
        kills.next_user += TOP_UP
    before = await _interrupted(url)
    pids = {d.proc.pid: d for d in victims if d.proc is not None}
    found: list[tuple[int, tuple[int, int]]] = []

    async def mid_transaction() -> bool:
        for pid in pids:
            held = await _held(url, pid, reminders)
            if held[1] > 0:
                found.append((pid, held))
                return True
        return False

    await wait_until(mid_transaction, timeout=30, interval=0.01, what="a hand-off to kill")
    pid, held = found[-1]
    victim = pids[pid]
    await victim.kill()
    if restart:
        await victim.start()
    await wait_until(lambda: _none_held(url, pid, reminders), timeout=TAKE_BACK_S,
                     interval=0.1, what="the dead process's claims taken back")
    kills.held.append(held)
    kills.interrupted.append(await _interrupted(url) - before)
    return victim


async def _none_held(url: str, pid: int, reminders: bool) -> bool:
    return (await _held(url, pid, reminders))[0] == 0


async def _no_surveys_left(url: str) -> bool:
    return await unfinished_surveys(url) == 0


async def finish(url: str, sink: SmtpSink | None) -> None:
    if sink is not None:
        sink.delay = 0.0
    await wait_until(lambda: _settled(url), timeout=60, interval=0.25,
                     what="no survey pending or claimed")


async def _settled(url: str) -> bool:
    [(reminders,)] = await rows(url, "SELECT count(*) FROM surveys WHERE reminder_due_at IS "
                                "NOT NULL")
    return await unfinished_surveys(url) == 0 and int(reminders) == 0


async def check_why(url: str, d: Daemon, states: dict[int, tuple[str, str | None, str]]
                    ) -> list[int]:
    """Every interrupted survey has its decision (failed, with the reason); `npsd why`
    shows it for the first one. Returns the interrupted ids."""
    lost = sorted(s for s, (state, error, _u) in states.items()
                  if state == "failed" and error == INTERRUPTED)
    decided = {int(r[0]) for r in await rows(
        url, "SELECT survey_id FROM decisions WHERE outcome = 'failed' AND reason = ?",
        INTERRUPTED)}
    assert set(lost) <= decided, sorted(set(lost) - decided)
    for survey_id in lost[:1]:
        user = states[survey_id][2]
        code, out, err = await d.cli("why", user, "--json")
        assert code == 0, err
        shown = json.loads(out)
        entries = shown if isinstance(shown, list) else shown.get("decisions", [])
        assert any(e["outcome"] == "failed" and e["reason"] == INTERRUPTED
                   and e.get("survey_id") == survey_id for e in entries), entries
    return lost


def per_recipient(messages: list[Any]) -> Counter[str]:
    """Deliveries the sink accepted, by envelope recipient."""
    return Counter(r for m in messages for r in m.rcpt_tos)


def check_kills(kills: Kills, count: int) -> None:
    assert len(kills.interrupted) == count
    assert all(n <= MAX_CONNECTIONS for n in kills.interrupted), kills.interrupted
    # The victims held more than was on their connections: those went back to the queue.
    assert sum(c for c, _h in kills.held) > sum(kills.interrupted)


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(300)
async def test_kills_on_postgres_cost_one_survey_per_connection_at_most(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kills = Kills()
    async with SmtpSink() as sink:
        sink.delay = HOLD_S
        a, b = npsd(tmp_path, "a", pg_url, sink), npsd(tmp_path, "b", pg_url, sink)
        try:
            await a.start()
            await b.start()
            killed = []
            for _ in range(PG_KILLS):
                killed.append(await kill_mid_dispatch([a, b], pg_url, kills, restart=False))
                await killed[-1].start()  # a new process, with a new lease owner
            await finish(pg_url, sink)
            states = await survey_states(pg_url)
            lost = await check_why(pg_url, a, states)
            codes = [await a.stop(), await b.stop()]
        finally:
            await a.close()
            await b.close()
        messages = sink.messages
    await assert_sent_once(capsys, "postgres, two processes", pg_url, messages, kills,
                           PG_KILLS, states, lost)
    assert codes == [0, 0]
    assert {d.workdir.name for d in killed} == {"a", "b"}, "only one of the two was killed"


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_kills_on_sqlite_cost_one_survey_per_connection_at_most(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'npsd.db'}"
    kills = Kills()
    async with SmtpSink() as sink:
        sink.delay = HOLD_S
        d = npsd(tmp_path, "a", url, sink)
        try:
            await d.start()
            for _ in range(SQLITE_KILLS):
                await kill_mid_dispatch([d], url, kills, restart=True)
            await finish(url, sink)
            states = await survey_states(url)
            lost = await check_why(url, d, states)
            assert await d.stop() == 0
        finally:
            await d.close()
        messages = sink.messages
    await assert_sent_once(capsys, "sqlite, one process restarted", url, messages, kills,
                           SQLITE_KILLS, states, lost)


def split(states: dict[int, tuple[str, str | None, str]]
          ) -> tuple[dict[int, tuple[str, str | None, str]], dict[int, tuple[str, str | None, str]]]:
    """(first surveys, surveys seeded for their reminders), by their users' names."""
    first = {k: v for k, v in states.items() if v[2].startswith("u")}
    return first, {k: v for k, v in states.items() if k not in first}


async def audit_reminders(url: str, states: dict[int, tuple[str, str | None, str]],
                          reminded: Counter[int]) -> tuple[list[int], list[str]]:
    """Each seeded survey stays sent and got its reminder exactly once, or at most once when
    it was interrupted, with its decision. Returns (interrupted ids, problems)."""
    problems = [f"reminder of unknown survey {s}" for s in reminded if s not in states]
    lost = sorted(s for s, (_st, error, _u) in states.items() if error == INTERRUPTED_REMINDER)
    for sid, (state, error, _user) in sorted(states.items()):
        n = reminded.get(sid, 0)
        if state != "sent" or (error is not None and error != INTERRUPTED_REMINDER):
            problems.append(f"survey {sid} ended {state!r} ({error!r}) after its reminder")
        elif n > 1 or (sid not in lost and n != 1):
            problems.append(f"survey {sid} got {n} reminders (interrupted: {sid in lost})")
    decided = {int(r[0]) for r in await rows(
        url, "SELECT survey_id FROM decisions WHERE outcome = 'reminder failed' AND "
        "reason = ?", INTERRUPTED_REMINDER)}
    problems += [f"no decision for interrupted reminder {s}" for s in lost if s not in decided]
    [(due,)] = await rows(url, "SELECT count(*) FROM surveys WHERE reminder_due_at IS NOT NULL")
    if due:
        problems.append(f"{due} reminders still due")
    return lost, problems


async def assert_sent_once(capsys: pytest.CaptureFixture[str], title: str, url: str,
                           messages: list[Any], kills: Kills, count: int,
                           states: dict[int, tuple[str, str | None, str]],
                           lost: list[int]) -> None:
    deliveries = per_recipient(messages)
    first, seeded = split(states)
    emailed = await survey_ids_in(url, email_tokens(messages))
    audit = audit_surveys(first, emailed)
    reminded = await survey_ids_in(url, email_tokens(messages, reminders=True))
    reminders_lost, reminder_problems = await audit_reminders(url, seeded, reminded)
    report(capsys, f"kills during dispatch ({title})", kills=len(kills.interrupted),
           interrupted_per_kill=kills.interrupted, held_at_kill=kills.held,
           surveys=len(first), reminders_due=len(seeded), emails=len(messages),
           sent=audit.sent, interrupted=audit.interrupted,
           interrupted_delivered=audit.interrupted_emailed,
           never_delivered=audit.interrupted - audit.interrupted_emailed,
           reminders_sent=sum(reminded.values()), reminders_interrupted=len(reminders_lost),
           duplicates=sum(1 for n in deliveries.values() if n > 1))
    assert [r for r, n in deliveries.items() if n > 1] == []
    assert audit.duplicates == [] and audit.problems == [], audit.problems[:10]
    assert reminder_problems == [], reminder_problems[:10]
    assert audit.sent + audit.interrupted == len(first) == kills.next_user
    assert len(seeded) == kills.reminder_users and kills.reminder_kills >= 2
    assert audit.interrupted == len(lost)
    assert len(lost) + len(reminders_lost) == sum(kills.interrupted)
    assert reminders_lost, "no kill interrupted a reminder"
    check_kills(kills, count)


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_kills_with_the_file_backend_write_each_survey_exactly_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'npsd.db'}"
    kills = Kills()
    d = npsd(tmp_path, "a", url, None)
    try:
        await d.start()
        for _ in range(FILE_KILLS):
            await kill_mid_dispatch([d], url, kills, restart=True)
        await finish(url, None)
        assert await d.stop() == 0
    finally:
        await d.close()
    states = await survey_states(url)
    first, seeded = split(states)
    outbox = tmp_path / "a" / "outbox"
    written = await survey_ids_in(url, outbox_tokens(outbox))
    reminded = await survey_ids_in(url, outbox_tokens(outbox, reminders=True))
    report(capsys, "kills during dispatch (sqlite, file backend)",
           kills=len(kills.interrupted), held_at_kill=kills.held, surveys=len(first),
           reminders_due=len(seeded), files=sum(written.values()),
           reminder_files=sum(reminded.values()))
    assert kills.interrupted == [0] * FILE_KILLS
    assert {s: st for s, (st, _e, _u) in states.items() if st != "sent"} == {}
    assert sorted(written) == sorted(first) and set(written.values()) == {1}
    assert len(seeded) == TOP_UP and sorted(reminded) == sorted(seeded)
    assert set(reminded.values()) == {1}
