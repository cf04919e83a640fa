"""Scale-out on PostgreSQL: two `npsd run` processes on one database share the work without
doing any of it twice: 10,000 due surveys are emailed exactly once; when one process is
SIGKILLed mid-run the other takes over its claims after the lease; two syncers never sync
the same answer twice."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from jobs.dispatch import LEASE
from settings import SmtpSettings
from tests.conftest import ADMIN, bearer
from tests.fakes.segment_api import FakeSegment
from tests.harness import Daemon, free_port
from tests.reliability.support import (
    LeanSink,
    audit_surveys,
    pg_dsn,
    report,
    seed,
    survey_ids_in,
    survey_states,
    unfinished_surveys,
    wait_until,
)

pytestmark = pytest.mark.postgres

SURVEYS = 10_000
KILL_SURVEYS = 4_000  # the kill variant waits out a 30 s lease: keep its volume smaller
# Claims one commit of the dispatcher's hand-off journal can still settle after a freeze:
# the outcome of one message per SMTP connection (jobs.handoff).
IN_FLIGHT = SmtpSettings().max_connections


def pair(
    tmp_path: Path,
    url: str,
    sink: LeanSink | None = None,
    level: str = "warning",
    **sections: dict[str, Any],
) -> list[Daemon]:
    daemons = []
    for name in ("a", "b"):
        npsd = Daemon(
            tmp_path / name,
            url,
            port=free_port(),
            log={"format": "json", "level": level},
            **sections,
        )
        if sink is not None:
            npsd.sections["email"] = {"backend": "smtp"}
            npsd.sections["email.smtp"] = {
                "host": sink.host,
                "port": sink.port,
                "security": "none",
                "timeout": "10s",
            }
        daemons.append(npsd)
    return daemons


async def migrate(npsd: Daemon) -> None:
    npsd.workdir.mkdir(parents=True, exist_ok=True)
    npsd.write_config()
    code, _out, err = await npsd.cli("migrate")
    assert code == 0, err


async def _settled(url: str) -> bool:
    return await unfinished_surveys(url) == 0


async def test_two_processes_email_each_survey_once(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with LeanSink() as sink:
        a, b = pair(tmp_path, pg_url, sink)
        await migrate(a)
        await seed(pg_url, SURVEYS)
        started = time.monotonic()
        await asyncio.gather(a.start(), b.start())
        try:
            await sink.wait_for(SURVEYS, timeout=180)
            await wait_until(lambda: _settled(pg_url), timeout=30, what="all surveys settled")
            elapsed = time.monotonic() - started
            await _probe(pg_url, sink, first=SURVEYS)
        finally:
            codes = await asyncio.gather(a.stop(), b.stop())
            await asyncio.gather(a.close(), b.close())
        messages = list(sink.tokens)
    emailed = await survey_ids_in(pg_url, messages)
    audit = audit_surveys(await survey_states(pg_url), emailed)
    report(
        capsys,
        "two processes, 10,000 surveys",
        seconds=round(elapsed, 1),
        emails=len(messages),
        distinct=len(emailed),
        duplicates=len(audit.duplicates),
        sent=audit.sent,
        rate_per_s=round(len(messages) / elapsed),
    )
    assert codes == [0, 0]
    assert audit.duplicates == []
    assert audit.problems == []
    assert len(messages) == SURVEYS + 1 and audit.sent == SURVEYS + 1  # with the probe


async def _probe(url: str, sink: LeanSink, first: int) -> None:
    """One more survey, due at once: when it is emailed and settled, a dispatcher has run
    over everything due after the work was done, and nothing else was due (the caller counts
    the emails after both processes have stopped and finished what they had in flight)."""
    before = sink.count
    await seed(url, 1, first=first)
    await sink.wait_for(before + 1, timeout=30)
    await wait_until(lambda: _settled(url), timeout=30, what="the probe settled")


async def test_two_processes_one_killed_mid_run(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with LeanSink() as sink:
        a, b = pair(tmp_path, pg_url, sink)
        await migrate(a)
        await seed(pg_url, KILL_SURVEYS)
        started = time.monotonic()
        await asyncio.gather(a.start(), b.start())
        try:
            await sink.wait_for(KILL_SURVEYS // 5, timeout=120)
            claimed_by_dead = await _freeze_holding_claims(a, pg_url)
            await a.kill()
            killed_at = time.monotonic()
            await wait_until(
                lambda: _settled(pg_url),
                timeout=LEASE.total_seconds() + 60,
                interval=0.25,
                what="the survivor finished the work",
            )
            settled_s = time.monotonic() - killed_at
            takeovers = b.events("survey.leases_taken_over")
            await _probe(pg_url, sink, first=KILL_SURVEYS)
        finally:
            await a.close()
            code = await b.stop()
            await b.close()
        messages = list(sink.tokens)
    emailed = await survey_ids_in(pg_url, messages)
    audit = audit_surveys(await survey_states(pg_url), emailed)
    report(
        capsys,
        "two processes, one killed",
        seconds=round(time.monotonic() - started, 1),
        after_kill_s=round(settled_s, 1),
        claimed_by_dead=claimed_by_dead,
        taken_over=[(e.get("returned"), e.get("interrupted")) for e in takeovers],
        emails=len(messages),
        distinct=len(emailed),
        duplicates=len(audit.duplicates),
        sent=audit.sent,
        interrupted=audit.interrupted,
        interrupted_emailed=audit.interrupted_emailed,
    )
    assert code == 0
    assert audit.duplicates == []
    assert audit.problems == []
    assert audit.sent + audit.interrupted == KILL_SURVEYS + 1  # with the probe
    # The dead process held claims: the survivor took them over (back to pending, or failed
    # if their hand-off had started), within the lease plus a tick. All of them but those a
    # commit the frozen process had already sent may have settled (at most IN_FLIGHT).
    taken = sum(e["returned"] + e["interrupted"] for e in takeovers)
    assert claimed_by_dead - IN_FLIGHT <= taken <= claimed_by_dead, (taken, claimed_by_dead)
    assert taken > 0 and audit.interrupted <= taken
    # Only what was on an SMTP connection at the kill is lost: one per connection at most.
    assert audit.interrupted <= SmtpSettings().max_connections, audit.interrupted
    assert settled_s < LEASE.total_seconds() + 2 + 10


async def _freeze_holding_claims(npsd: Daemon, url: str, timeout: float = 60) -> int:
    """SIGSTOP the process at a moment it holds more claims than one commit of its can settle,
    so it is killed holding some: the takeover is then always exercised. Returns how many it
    held when frozen (a commit it sent just before the stop may still settle IN_FLIGHT of
    them; nothing else moves them: a live holder's claims are taken only after the lease)."""
    assert npsd.proc is not None
    mine = f"%:{npsd.proc.pid}:%"  # leases name their holder host:pid:nonce
    conn = await asyncio.wait_for(asyncpg.connect(pg_dsn(url)), timeout=10)
    query = "SELECT count(*) FROM surveys WHERE state = 'sending' AND lease_owner LIKE $1"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if int(await conn.fetchval(query, mine)) > IN_FLIGHT:
                npsd.proc.send_signal(signal.SIGSTOP)
                held = int(await conn.fetchval(query, mine))
                if held > IN_FLIGHT:
                    return held
                npsd.proc.send_signal(signal.SIGCONT)  # it settled them just before the stop
            assert time.monotonic() < deadline, "the process never held a claim"
            await asyncio.sleep(0.01)
    finally:
        await conn.close()


async def test_two_processes_sync_each_answer_once(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    answers = 3_000
    async with FakeSegment("wk") as seg:
        a, b = pair(
            tmp_path,
            pg_url,
            None,
            level="info",
            segment={"write_key": "wk", "endpoint": seg.url, "sync_at": "03:00"},
        )
        await migrate(a)
        await seed(pg_url, answers, answered=True)
        # A daily run was missed while "down": both processes catch up at start, at once.
        conn = await asyncpg.connect(pg_dsn(pg_url))
        try:
            await conn.execute(
                "UPDATE sync_state SET last_started_at = $1", datetime.now(UTC) - timedelta(days=2)
            )
        finally:
            await conn.close()
        seg.slow_next(0.5, count=2)  # keep the first syncer busy while the other looks
        started = time.monotonic()
        await asyncio.gather(a.start(), b.start())
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:

                async def sync(d: Daemon) -> int:
                    async with http.post(d.url + "/v1/sync", headers=bearer(ADMIN)) as r:
                        return r.status

                manual = await asyncio.gather(*(sync(d) for d in (a, b, a, b)))
                await wait_until(lambda: _synced(pg_url), timeout=60, what="answers synced")
                # New answers, and both processes asked to sync them at the same moment.
                await seed(pg_url, answers, answered=True, first=answers)
                seg.slow_next(0.5, count=2)
                manual += await asyncio.gather(sync(a), sync(b))
            await wait_until(lambda: _synced(pg_url), timeout=60, what="all answers synced")
            elapsed = time.monotonic() - started
        finally:
            await asyncio.gather(a.stop(), b.stop())
            await asyncio.gather(a.close(), b.close())
    identifies = [m for m in seg.messages if m["type"] == "identify"]
    per_user = Counter(m["userId"] for m in identifies)
    runs = [len(d.events("sync.started")) for d in (a, b)]
    busy = [len(d.events("sync.busy")) for d in (a, b)]
    report(
        capsys,
        "two processes, sync-back",
        seconds=round(elapsed, 1),
        answers=answers,
        messages=len(seg.messages),
        identifies=len(identifies),
        duplicates=len(seg.duplicates()),
        manual_answers=manual,
        busy=busy,
        runs=runs,
    )
    assert seg.duplicates() == []
    assert len(per_user) == 2 * answers and set(per_user.values()) == {1}
    assert all(status in (200, 409) for status in manual)
    assert sum(runs) >= 2 and sum(busy) + manual.count(409) >= 1


async def _synced(url: str) -> bool:
    conn = await asyncio.wait_for(asyncpg.connect(pg_dsn(url)), timeout=10)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM surveys WHERE needs_sync")) == 0
    finally:
        await conn.close()
