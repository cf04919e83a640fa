from __future__ import annotations

import asyncio
import email
import email.policy
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from daemon.config import EmailSettings, SmtpSettings
from jobs.clock import MovableClock
from jobs.email import (
    FileBackend,
    PermanentEmailError,
    RenderedEmail,
    SmtpBackend,
    SurveyEmail,
    TransientEmailError,
    make_backend,
    render_message,
)
from tests.fakes.smtp_sink import SmtpSink
from tests.mail import read_mail


def message(survey_id: int = 1, to: str = "peter@example.com") -> RenderedEmail:
    return render_message(
        SurveyEmail(
            survey_id=survey_id,
            token=f"tok{survey_id}",
            to=to,
            first_name="Peter",
            name=None,
            product_name="Acme",
            public_url="http://127.0.0.1:8787",
            sender="Acme <nps@acme.example>",
        )
    )


def survey_of(msg: email.message.Message) -> int:
    """Which survey an email is for: its token (tok<id>) in the unsubscribe link."""
    match = re.search(r"/u/tok(\d+)>", str(msg["List-Unsubscribe"]))
    assert match is not None, msg["List-Unsubscribe"]
    return int(match.group(1))


def smtp_settings(sink: SmtpSink, **changes: object) -> SmtpSettings:
    base = SmtpSettings(
        host=sink.host,
        port=sink.port,
        security="none",
        timeout=timedelta(seconds=5),
        max_connections=4,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture
async def sink() -> AsyncIterator[SmtpSink]:
    async with SmtpSink() as s:
        yield s


@pytest.fixture
async def backend(sink: SmtpSink) -> AsyncIterator[SmtpBackend]:
    b = SmtpBackend(smtp_settings(sink))
    yield b
    await b.close()


# -- file backend --------------------------------------------------------------------


async def test_file_backend_writes_a_parseable_eml(tmp_path: Path) -> None:
    clock = MovableClock(datetime(2025, 3, 12, 14, 30, 1, tzinfo=UTC))
    outbox = tmp_path / "var" / "outbox"
    backend = FileBackend(outbox, clock=clock)
    await backend.send(message(7))
    await backend.send(message(7))  # same instant: must not overwrite
    await backend.close()

    files = sorted(outbox.iterdir())
    assert [f.suffix for f in files] == [".eml", ".eml"]  # no temp files left behind
    assert files[0].name.startswith("20250312T143001")
    parsed = email.message_from_bytes(files[0].read_bytes(), policy=email.policy.default)
    assert survey_of(parsed) == 7
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert parsed.get_body(("html",)) is not None


async def test_make_backend(tmp_path: Path) -> None:
    file_backend = make_backend(EmailSettings(backend="file", file_dir=tmp_path))
    assert isinstance(file_backend, FileBackend)
    smtp_backend = make_backend(EmailSettings(backend="smtp"))
    assert isinstance(smtp_backend, SmtpBackend)
    await smtp_backend.close()


# -- SMTP backend against a real server on loopback ------------------------------------


async def test_smtp_delivers(sink: SmtpSink, backend: SmtpBackend) -> None:
    await backend.send(message(1))
    [received] = await sink.wait_for(1, timeout=5)
    assert survey_of(received) == 1
    assert received.rcpt_tos == ["peter@example.com"]  # type: ignore[attr-defined]
    assert received.mail_from == "nps@acme.example"  # type: ignore[attr-defined]
    assert received["List-Unsubscribe"] == "<http://127.0.0.1:8787/u/tok1>"


async def test_smtp_451_is_transient(sink: SmtpSink, backend: SmtpBackend) -> None:
    sink.fail_next(451, "4.3.0 Try again later")
    with pytest.raises(TransientEmailError) as caught:
        await backend.send(message(1))
    assert caught.value.code == 451
    assert "Try again later" in caught.value.reply
    await backend.send(message(1))  # the next attempt goes through
    await sink.wait_for(1, timeout=5)
    assert sink.count == 1


async def test_smtp_550_is_permanent(sink: SmtpSink, backend: SmtpBackend) -> None:
    sink.fail_next(550, "5.1.1 No such user", at="RCPT")
    with pytest.raises(PermanentEmailError) as caught:
        await backend.send(message(1))
    assert caught.value.code == 550
    assert caught.value.reply == "5.1.1 No such user"

    sink.fail_next(554, "5.6.0 Message rejected")
    with pytest.raises(PermanentEmailError) as data_refused:
        await backend.send(message(2))
    assert data_refused.value.code == 554
    assert sink.count == 0


async def test_server_down_is_transient_and_recovers(sink: SmtpSink, backend: SmtpBackend) -> None:
    await backend.send(message(1))  # leaves an open connection in the pool
    sink.stop()
    await asyncio.sleep(0.05)
    with pytest.raises(TransientEmailError) as caught:
        await backend.send(message(2))
    assert caught.value.code is None
    sink.start()
    await backend.send(message(3))
    received = await sink.wait_for(2, timeout=5)
    assert [survey_of(m) for m in received] == [1, 3]


async def test_timeout_is_transient(sink: SmtpSink) -> None:
    sink.delay = 1.0
    backend = SmtpBackend(smtp_settings(sink, timeout=timedelta(seconds=0.2)))
    try:
        with pytest.raises(TransientEmailError):
            await backend.send(message(1))
    finally:
        await backend.close()


async def test_auth(tmp_path: Path) -> None:
    async with SmtpSink(auth={"npsd": "s3cret"}) as sink:
        good = SmtpBackend(smtp_settings(sink, username="npsd", password="s3cret"))
        bad = SmtpBackend(smtp_settings(sink, username="npsd", password="wrong"))
        try:
            await good.send(message(1))
            with pytest.raises(TransientEmailError) as caught:
                await bad.send(message(2))
            assert caught.value.code == 535
        finally:
            await good.close()
            await bad.close()
        assert sink.count == 1


async def test_pool_delivers_each_message_exactly_once(
    sink: SmtpSink, backend: SmtpBackend
) -> None:
    messages = [message(i, to=f"user{i}@example.com") for i in range(200)]
    async with asyncio.timeout(30):
        await asyncio.gather(*(backend.send(m) for m in messages))
    received = await sink.wait_for(200, timeout=10)
    assert sorted(survey_of(m) for m in received) == list(range(200))
    assert len({m["Message-ID"] for m in received}) == 200
    assert len(backend._idle) <= 4  # never more connections than max_connections


def test_sink_works_from_sync_code() -> None:
    import smtplib

    with SmtpSink() as sink, smtplib.SMTP(sink.host, sink.port, timeout=5) as client:
        client.send_message(read_mail(message(1)))
    assert sink.count == 1


def rendered(survey_id: int = 1, to: str = "peter@example.com") -> RenderedEmail:
    return render_message(
        SurveyEmail(survey_id=survey_id, token=f"tok{survey_id}", to=to, first_name="Peter",
                    name=None, product_name="Acme", public_url="http://127.0.0.1:8787",
                    sender="Acme <nps@acme.example>")
    )


async def test_file_backend_writes_the_rendered_bytes(tmp_path: Path) -> None:
    backend = FileBackend(tmp_path)
    m = rendered(9)
    await backend.send(m)
    [written] = list(tmp_path.iterdir())
    assert written.read_bytes() == m.data


async def test_smtp_sends_the_rendered_bytes(sink: SmtpSink, backend: SmtpBackend) -> None:
    m = rendered(5)
    await backend.send(m)
    [received] = await sink.wait_for(1, timeout=5)
    assert received.mail_from == "nps@acme.example"  # type: ignore[attr-defined]
    assert received.rcpt_tos == ["peter@example.com"]  # type: ignore[attr-defined]
    assert received.as_bytes() == read_mail(m).as_bytes()
    assert received["Message-ID"] == m.message_id


async def test_smtp_dot_stuffing_keeps_lines_that_start_with_a_dot(
    sink: SmtpSink, backend: SmtpBackend
) -> None:
    m = rendered(6)
    body = m.data + b".hidden\r\n.\r\n..two\r\n"
    await backend.send(RenderedEmail(m.sender, m.recipients, m.message_id, body))
    [received] = await sink.wait_for(1, timeout=5)
    assert received.as_bytes().endswith(b".hidden\n.\n..two\n")


async def test_smtp_rendered_failures_keep_the_connection(
    sink: SmtpSink, backend: SmtpBackend
) -> None:
    sink.fail_next(550, "5.1.1 No such user", at="RCPT")
    with pytest.raises(PermanentEmailError):
        await backend.send(rendered(1))
    sink.fail_next(452, "4.3.1 Out of memory")
    with pytest.raises(TransientEmailError) as caught:
        await backend.send(rendered(2))
    assert caught.value.code == 452
    await backend.send(rendered(3))
    [received] = await sink.wait_for(1, timeout=5)
    assert survey_of(received) == 3
    assert len(backend._idle) == 1  # the same connection throughout


async def test_file_backend_names_files_by_survey_whatever_the_message_id(
        tmp_path: Path) -> None:
    """Erasure finds a person's .eml files by survey id, so the name cannot depend on the
    Message-ID (which is random, not npsd-survey-N, for deliverability)."""
    from jobs.email import FileBackend, SurveyEmail, render_message
    from jobs.outbox import files_by_survey, remove_files

    backend = FileBackend(tmp_path)
    for survey_id, reminder in ((41, False), (41, True), (42, False)):
        rendered = render_message(SurveyEmail(
            survey_id=survey_id, token="t" * 32, to="p@example.com", first_name="P", name=None,
            product_name="Acme", public_url="http://127.0.0.1:1", sender="nps@acme.example",
            reminder=reminder))
        await backend.send(replace(rendered, message_id="<0f3a9c1e7b2d4a6c@acme.example>"))
    assert {k: len(v) for k, v in files_by_survey(tmp_path).items()} == {41: 2, 42: 1}
    assert remove_files(tmp_path, [41]) == 2
    assert list(files_by_survey(tmp_path)) == [42]
