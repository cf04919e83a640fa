"""Helpers for the reliability tests: a load generator that remembers what npsd acknowledged,
direct reads of the store (sqlite3 / asyncpg, not npsd's own code), and email counting."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import re
import secrets
import sqlite3
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from storage.surveys import INTERRUPTED
from tests.conftest import basic
from tests.waiting import wait_for

# Which survey an email is for: the token of its unsubscribe link (Message-IDs are random).
UNSUBSCRIBE_TOKEN = re.compile(r"/u/([A-Za-z0-9_%-]+)>")


def report(capsys: pytest.CaptureFixture[str], title: str, **counts: Any) -> None:
    """Print counts so CI output shows them even without -s."""
    with capsys.disabled():
        print(f"\n[reliability] {title}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))


async def wait_until(
    predicate: Any, timeout: float, interval: float = 0.1, what: str = "condition"
) -> None:
    """Poll an async predicate until it is true; TimeoutError names what was awaited."""
    await wait_for(predicate, timeout, interval, what)


# --- the store, read directly ---------------------------------------------------------


def sqlite_path(url: str) -> str | None:
    prefix = "sqlite+aiosqlite:///"
    return url[len(prefix) :] if url.startswith(prefix) else None


def pg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


def _sqlite_rows(path: str, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path, timeout=30)
    try:
        return list(conn.execute(sql, args))
    finally:
        conn.close()


async def rows(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Run one query; SQL uses `?` placeholders (rewritten to $n for PostgreSQL)."""
    path = sqlite_path(url)
    if path is not None:
        return await asyncio.to_thread(_sqlite_rows, path, sql, args)
    n = itertools.count(1)
    pg_sql = re.sub(r"\?", lambda _: f"${next(n)}", sql)
    conn = await asyncio.wait_for(asyncpg.connect(pg_dsn(url)), timeout=10)
    try:
        return [tuple(r) for r in await asyncio.wait_for(conn.fetch(pg_sql, *args), 60)]
    finally:
        await conn.close()


async def stored_message_ids(url: str) -> set[str]:
    return {r[0] for r in await rows(url, "SELECT message_id FROM events")}


async def integrity_check(url: str) -> str:
    path = sqlite_path(url)
    if path is None:
        return "ok"
    return str((await asyncio.to_thread(_sqlite_rows, path, "PRAGMA integrity_check", ()))[0][0])


async def survey_states(url: str) -> dict[int, tuple[str, str | None, str]]:
    """survey id -> (state, last_error, user_id)."""
    return {
        int(r[0]): (str(r[1]), r[2], str(r[3]))
        for r in await rows(url, "SELECT id, state, last_error, user_id FROM surveys")
    }


async def unfinished_surveys(url: str) -> int:
    """Surveys still to be handled: due and pending, or claimed (sending)."""
    found = await rows(
        url, "SELECT state, due_at FROM surveys WHERE state IN ('pending', 'sending')"
    )
    return len(found)


# --- emails ---------------------------------------------------------------------------


async def survey_ids_in(url: str, tokens: Iterable[str]) -> Counter[int]:
    """How many first emails (not reminders) each survey got, from their link tokens."""
    ids = {token: survey_id for token, survey_id in
           await rows(url, "SELECT token, id FROM surveys")}
    counts: Counter[int] = Counter()
    for token in tokens:
        assert token in ids, f"an email for an unknown survey token {token!r}"
        counts[ids[token]] += 1
    return counts


def email_tokens(messages: Iterable[Any], *, reminders: bool = False) -> list[str]:
    """The survey token of each email that is not a reminder (or, with `reminders`, of
    each reminder)."""
    out = []
    for msg in messages:
        if str(msg["Subject"]).startswith("Reminder:") != reminders:
            continue
        match = UNSUBSCRIBE_TOKEN.search(str(msg["List-Unsubscribe"]))
        assert match is not None, f"no unsubscribe link in {msg['List-Unsubscribe']!r}"
        out.append(match.group(1))
    return out


def outbox_tokens(outbox: Path, *, reminders: bool = False) -> list[str]:
    """Survey tokens of every complete .eml in the file backend's outbox (first emails, or
    reminders)."""
    if not outbox.is_dir():
        return []
    return email_tokens((message_from_bytes(path.read_bytes(), policy=policy.default)
                         for path in sorted(outbox.glob("*.eml"))), reminders=reminders)


@dataclass
class SurveyAudit:
    emails: int
    duplicates: list[int]
    sent: int
    interrupted: int
    interrupted_emailed: int
    problems: list[str]


def audit_surveys(
    states: dict[int, tuple[str, str | None, str]], emailed: Counter[int]
) -> SurveyAudit:
    """Every survey emailed at most once; sent ones exactly once; failed only by the
    at-most-once rule; nothing left pending or claimed."""
    problems: list[str] = []
    sent = interrupted = interrupted_emailed = 0
    for sid, (state, error, _user) in sorted(states.items()):
        n = emailed.get(sid, 0)
        if state == "sent":
            sent += 1
            if n != 1:
                problems.append(f"survey {sid} is sent but was emailed {n} times")
        elif state == "failed" and error == INTERRUPTED:
            interrupted += 1
            interrupted_emailed += n
            if n > 1:
                problems.append(f"survey {sid} (interrupted) was emailed {n} times")
        else:
            problems.append(f"survey {sid} ended {state!r} ({error!r}), emailed {n} times")
    for sid in emailed:
        if sid not in states:
            problems.append(f"an email for unknown survey {sid}")
    return SurveyAudit(
        emails=sum(emailed.values()),
        duplicates=sorted(s for s, n in emailed.items() if n > 1),
        sent=sent,
        interrupted=interrupted,
        interrupted_emailed=interrupted_emailed,
        problems=problems,
    )


async def seed(url: str, n: int, *, answered: bool = False, first: int = 0,
               reminders: bool = False) -> None:
    """Users u{first}… with an email and one survey each, due in the past (or sent and
    answered, waiting to be synced; or with `reminders`, sent, unanswered and with its
    reminder due, to users r{first}…), written straight into the store (SQLite or
    PostgreSQL, while npsd runs)."""
    now = datetime.now(UTC)
    past = now - timedelta(minutes=5)
    ids = range(first, first + n)
    prefix = "r" if reminders else "u"
    users = [
        (f"{prefix}{i}", False, f"{prefix}{i}@example.com", "Seeded", "{}", "{}", 0, 0, True,
         now) for i in ids
    ]
    sent = answered or reminders
    surveys = [
        (
            f"{prefix}{i}",
            secrets.token_urlsafe(24),
            "survey",
            "answered" if answered else "sent" if reminders else "pending",
            past,
            past,
            0,
            1 if answered else 0,
            0,
            answered,
            past if sent else None,
            (i % 11) if answered else None,
            f"comment {i}" if answered else None,
            past if answered else None,
            past if reminders else None,
            now + timedelta(days=30) if reminders else None,
        )
        for i in ids
    ]
    path = sqlite_path(url)
    if path is not None:
        await asyncio.to_thread(_seed_sqlite, path, users, surveys)
        return
    conn = await asyncio.wait_for(asyncpg.connect(pg_dsn(url)), timeout=10)
    try:
        async with conn.transaction():
            await conn.copy_records_to_table(
                "users",
                records=users,
                columns=[
                    "user_id",
                    "anonymous",
                    "email",
                    "first_name",
                    "traits",
                    "trait_times",
                    "event_count",
                    "session_count",
                    "unsubscribe_synced",
                    "updated_at",
                ],
                timeout=60,
            )
            await conn.copy_records_to_table(
                "surveys",
                records=surveys,
                columns=[
                    "user_id",
                    "token",
                    "kind",
                    "state",
                    "due_at",
                    "created_at",
                    "attempts",
                    "answer_revision",
                    "synced_revision",
                    "needs_sync",
                    "sent_at",
                    "score",
                    "comment",
                    "answered_at",
                    "reminder_due_at",
                    "expires_at",
                ],
                timeout=60,
            )
    finally:
        await conn.close()


USER_COLUMNS = ("user_id", "anonymous", "email", "first_name", "traits", "trait_times",
                "event_count", "session_count", "unsubscribe_synced", "updated_at")
SURVEY_COLUMNS = ("user_id", "token", "kind", "state", "due_at", "created_at", "attempts",
                  "answer_revision", "synced_revision", "needs_sync", "sent_at", "score",
                  "comment", "answered_at", "reminder_due_at", "expires_at")


def _seed_sqlite(path: str, users: list[tuple[Any, ...]], surveys: list[tuple[Any, ...]]
                 ) -> None:
    def stored(row: tuple[Any, ...]) -> tuple[Any, ...]:
        # As SQLAlchemy's SQLite DateTime stores a value: naive UTC text.
        return tuple(v.astimezone(UTC).replace(tzinfo=None).isoformat(" ")
                     if isinstance(v, datetime) else v for v in row)

    conn = sqlite3.connect(path, timeout=30)
    try:
        with conn:
            for table, columns, values in (("users", USER_COLUMNS, users),
                                           ("surveys", SURVEY_COLUMNS, surveys)):
                conn.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
                                 f"({', '.join('?' * len(columns))})",
                                 [stored(r) for r in values])
    finally:
        conn.close()


# --- load -----------------------------------------------------------------------------


@dataclass
class Load:
    """A few concurrent senders posting batches to /v1/segment with unique messageIds.

    A batch answered 200 is acknowledged: all its messageIds must be stored. A batch that
    got anything else (refused connection, reset, 503) is posted again, as Segment does, so
    a batch committed just before a kill comes back as duplicates.
    """

    url: str
    senders: int = 4
    batch: int = 20
    identify_every: int = 4  # one identify (a new user with an email) per this many messages
    pause_s: float = 0.0
    acked: set[str] = field(default_factory=set)
    acked_identified: set[str] = field(default_factory=set)
    statuses: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    false_acks: list[str] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _seq: itertools.count[int] = field(default_factory=itertools.count)
    prefix: str = field(default_factory=lambda: f"r{random.randrange(1 << 30):x}")

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._sender(i), name=f"sender-{i}") for i in range(self.senders)
        ]

    async def stop(self) -> None:
        self._stop.set()
        async with asyncio.timeout(30):
            await asyncio.gather(*self._tasks)

    def _make_batch(self) -> tuple[list[dict[str, Any]], set[str]]:
        messages: list[dict[str, Any]] = []
        users: set[str] = set()
        for _ in range(self.batch):
            n = next(self._seq)
            mid = f"{self.prefix}-m{n}"
            if n % self.identify_every == 0:
                user = f"{self.prefix}-u{n}"
                users.add(user)
                messages.append(
                    {
                        "type": "identify",
                        "userId": user,
                        "messageId": mid,
                        "traits": {"email": f"{user}@example.com", "firstName": "Crash"},
                    }
                )
            else:
                messages.append(
                    {
                        "type": "track",
                        "userId": f"{self.prefix}-u{n % 97}",
                        "messageId": mid,
                        "event": "Clicked",
                        "properties": {"n": n},
                    }
                )
        return messages, users

    async def _sender(self, index: int) -> None:
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not self._stop.is_set():
                messages, users = self._make_batch()
                while not self._stop.is_set():
                    status = await self._post(session, messages)
                    if status == 200:
                        self.acked.update(m["messageId"] for m in messages)
                        self.acked_identified.update(users)
                        break
                    await asyncio.sleep(0.02)
                if self.pause_s:
                    await asyncio.sleep(self.pause_s)

    async def _post(self, session: aiohttp.ClientSession, messages: list[dict[str, Any]]) -> int:
        try:
            async with session.post(
                self.url,
                data=json.dumps(messages),
                headers={"Content-Type": "application/json", **basic()},
            ) as r:
                body = await r.json(content_type=None)
                self.statuses[str(r.status)] += 1
                if r.status == 200:
                    if body["accepted"] + body["duplicates"] != len(messages) or body["rejected"]:
                        self.false_acks.append(f"200 with {body}")
                    self.duplicates += body["duplicates"]
                return r.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self.statuses[type(exc).__name__] += 1
            return 0


async def drain(load: Load) -> None:
    with contextlib.suppress(TimeoutError):
        await load.stop()


# --- a lean SMTP sink for volume -------------------------------------------------------


class LeanSink:
    """A minimal SMTP server that keeps only each first email's survey token (reminders are
    left out).

    aiosmtpd (tests.fakes.smtp_sink) parses and checks every command and caps out near a
    hundred messages a second here, sharing two cores with two npsd processes; this one
    speaks just enough SMTP for aiosmtplib (EHLO, MAIL, RCPT, DATA, RSET, NOOP, QUIT) and
    does not make the test process the bottleneck of a 10,000-message run.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.tokens: list[str] = []
        self._server: asyncio.Server | None = None

    @property
    def count(self) -> int:
        return len(self.tokens)

    async def __aenter__(self) -> LeanSink:
        self._server = await asyncio.start_server(self._client, self.host, 0, limit=1 << 22)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), timeout=5)

    async def wait_for(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.count < n:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"LeanSink: {self.count} of {n} messages after {timeout}s")
            await asyncio.sleep(0.05)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(b"220 lean.sink ESMTP\r\n")
            while True:
                line = await reader.readline()
                if not line:
                    return
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    writer.write(b"250-lean.sink\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n")
                elif verb == b"DATA":
                    writer.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    data = await reader.readuntil(b"\r\n.\r\n")
                    match = _TOKEN.search(data)
                    if _REMINDER.search(data) is None:
                        self.tokens.append(match.group(1).decode() if match else "")
                    writer.write(b"250 OK\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 Bye\r\n")
                    await writer.drain()
                    return
                else:  # MAIL, RCPT, RSET, NOOP
                    writer.write(b"250 OK\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()


_TOKEN = re.compile(rb"(?im)^List-Unsubscribe:\s*<[^>\r\n]*/u/([A-Za-z0-9_%-]+)>")
_REMINDER = re.compile(rb"(?im)^Subject:\s*Reminder:")
