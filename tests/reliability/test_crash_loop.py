"""Crash loop: npsd under concurrent intake load is SIGKILLed at random moments and started
again, over and over. Afterwards nothing acknowledged is missing, the SQLite file is intact,
no survey was emailed twice, and every survey that fell due was sent or is accounted for by
the at-most-once rule."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.fakes.smtp_sink import SmtpSink
from tests.harness import Daemon
from tests.reliability.support import (
    Load,
    audit_surveys,
    drain,
    email_tokens,
    integrity_check,
    outbox_tokens,
    report,
    stored_message_ids,
    survey_ids_in,
    survey_states,
    unfinished_surveys,
    wait_until,
)

KILLS = 50
SOAK_KILLS = 400
# A claim of a killed process is taken back after the 30 s lease (jobs.dispatch.LEASE),
# on a dispatcher tick (every 2 s): the clean run at the end waits that long at most.
SETTLE_S = 30 + 2 + 15


@pytest.mark.timeout(1800)
async def test_crash_loop(
    db_url: str, tmp_path: Path, soak: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    backend = "sqlite" if db_url.startswith("sqlite") else "postgres"
    kills = int(os.environ.get("NPSD_CRASH_KILLS", SOAK_KILLS if soak else KILLS))
    seed = int(os.environ.get("NPSD_CRASH_SEED", str(random.randrange(1 << 30))))
    rng = random.Random(seed)
    started = time.monotonic()
    async with SmtpSink() as sink:
        npsd = Daemon(
            tmp_path / "npsd",
            db_url,
            survey={"max_delay": 0},
            log={"format": "json", "level": "warning"},
        )
        if backend == "postgres":  # SQLite uses the file backend, PostgreSQL real SMTP
            npsd.sections["email"] = {"backend": "smtp"}
            npsd.sections["email.smtp"] = {
                "host": sink.host,
                "port": sink.port,
                "security": "none",
                "timeout": "5s",
            }
        try:
            load = Load(npsd.url + "/v1/segment")
            load.start()
            uptimes: list[float] = []
            try:
                for _ in range(kills):
                    await npsd.start()
                    uptime = rng.uniform(0.1, 0.6)
                    uptimes.append(uptime)
                    await asyncio.sleep(uptime)
                    await npsd.kill()
            finally:
                await drain(load)
            loop_s = time.monotonic() - started

            # One clean run: the claims of the dead take their lease to come back, then
            # everything due is sent (or failed by the at-most-once rule) and npsd stops cleanly.
            await npsd.start()
            await wait_until(
                lambda: _settled(db_url),
                timeout=SETTLE_S,
                interval=0.25,
                what="no survey pending or claimed",
            )
            assert await npsd.stop() == 0

        finally:
            await npsd.close()
        if backend == "postgres":
            emailed = await survey_ids_in(db_url, email_tokens(sink.messages))
        else:
            emailed = await survey_ids_in(db_url, outbox_tokens(tmp_path / "npsd" / "outbox"))

    stored = await stored_message_ids(db_url)
    missing = sorted(load.acked - stored)
    integrity = await integrity_check(db_url)
    states = await survey_states(db_url)
    audit = audit_surveys(states, emailed)
    surveyed_users = {user for _state, _error, user in states.values()}
    unsurveyed = sorted(load.acked_identified - surveyed_users)
    report(
        capsys,
        f"crash loop ({backend}, seed {seed})",
        kills=kills,
        seconds=round(time.monotonic() - started, 1),
        loop_seconds=round(loop_s, 1),
        events_acknowledged=len(load.acked),
        events_found=len(stored & load.acked),
        events_stored=len(stored),
        redelivered_duplicates=load.duplicates,
        identifies_acknowledged=len(load.acked_identified),
        surveys=len(states),
        emails=audit.emails,
        sent=audit.sent,
        interrupted=audit.interrupted,
        interrupted_emailed=audit.interrupted_emailed,
        duplicates=len(audit.duplicates),
        answers=dict(Counter(load.statuses)),
    )

    assert not load.false_acks, load.false_acks[:5]
    assert len(load.acked) > 0 and audit.emails > 0, "the load never got through"
    assert missing == [], f"{len(missing)} acknowledged events lost, e.g. {missing[:5]}"
    assert integrity == "ok"
    assert audit.duplicates == [], f"surveys emailed twice: {audit.duplicates[:10]}"
    assert audit.problems == [], audit.problems[:10]
    assert unsurveyed == [], f"{len(unsurveyed)} identified users got no survey"


async def _settled(db_url: str) -> bool:
    return await unfinished_surveys(db_url) == 0
