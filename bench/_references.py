"""Physical references for the dispatch benchmark, measured in the same run as npsd:

- the counting SMTP sink's own rate: a bare asyncio SMTP client (no npsd, no database)
  sends the same survey messages over the same number of connections, one transaction at
  a time per connection (MAIL, RCPT, DATA, each reply awaited, as npsd does);
- the SQLite commit rate of one small row per commit (WAL, synchronous=FULL) in the
  benchmark's own directory: the hand-off journal commits once per message per connection
  at low load, so the disk's fsync bounds what one connection can send.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jobs.email_message import SurveyEmail, render_message  # noqa: E402

SENDER = "nps@acme.example"


def survey_messages(n: int) -> list[tuple[str, bytes]]:
    """(recipient, DATA payload) of n survey emails as npsd renders them."""
    now = datetime.now(UTC)
    out = []
    for i in range(n):
        uid = f"user-{i:07d}"
        email = SurveyEmail(survey_id=i + 1, token=f"tok{i:020d}", to=f"{uid}@example.test",
                            first_name=f"F{i}", name=f"F{i} L{i}", product_name="Acme",
                            public_url="http://127.0.0.1:8080", sender=f"Acme <{SENDER}>")
        m = render_message(email, now=now)
        body = m.data.replace(b"\r\n.", b"\r\n..")
        out.append((m.recipients[0], body + (b"" if body.endswith(b"\r\n") else b"\r\n")
                    + b".\r\n"))
    return out


async def _reply(reader: asyncio.StreamReader) -> bytes:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("the sink closed the connection")
        if line[3:4] != b"-":
            return line


async def _client(port: int, messages: list[tuple[str, bytes]]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
    await _reply(reader)
    writer.write(b"EHLO bench\r\n")
    await _reply(reader)
    for rcpt, payload in messages:
        for command in (b"MAIL FROM:<" + SENDER.encode() + b">\r\n",
                        b"RCPT TO:<" + rcpt.encode() + b">\r\n", b"DATA\r\n"):
            writer.write(command)
            await _reply(reader)
        writer.write(payload)
        await _reply(reader)
    writer.write(b"QUIT\r\n")
    await _reply(reader)
    writer.close()


def sink_rate(port: int, n: int, connections: int) -> float:
    """Messages/s the sink on `port` takes from a bare client over `connections`."""
    messages = survey_messages(n)

    async def run() -> float:
        started = time.perf_counter()
        await asyncio.gather(*(_client(port, messages[i::connections])
                               for i in range(connections)))
        return n / (time.perf_counter() - started)

    return asyncio.run(run())


def sqlite_commit_rate(directory: Path, seconds: float = 2.0) -> float:
    """One-row commits/s, WAL and synchronous=FULL, as npsd's store writes."""
    path = directory / "commit-reference.db"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, at TEXT)")
        n, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t (at) VALUES (?)", (str(n),))
            conn.execute("COMMIT")
            n += 1
        return n / (time.perf_counter() - started)
    finally:
        conn.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
