"""Recording accepted messages: dedup by messageId, apply to the book, plan surveys — all in
one transaction, so what is acknowledged is exactly what is committed."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.book_io import load_book, save_book
from storage.book_rules import Book, BookRules, apply_message
from storage.db import Database
from storage.events import Message
from storage.raw import RawSQL
from storage.survey_plan import Planner, plan_surveys

_BOOK_LOCK_KEY = 0x6E707365  # PostgreSQL: one book writer at a time across processes


async def record_messages(
    db: Database, messages: list[Message], rules: BookRules, planner: Planner | None,
    now: datetime,
) -> list[bool]:
    """Commit the messages; returns, per message, True if new and False if a duplicate."""
    async with db.write() as conn:
        return await record_in(conn, messages, rules, planner, now)


async def record_in(
    conn: AsyncConnection, messages: list[Message], rules: BookRules,
    planner: Planner | None, now: datetime,
) -> list[bool]:
    if not messages:
        return []
    if conn.dialect.name == "postgresql":
        await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _BOOK_LOCK_KEY})
    first: dict[str, int] = {}
    for index, m in enumerate(messages):
        first.setdefault(m.message_id, index)
    # Dedup: a messageId already stored is not inserted again, so not returned.
    raw = await RawSQL.of(conn)
    received = raw.ts(now)
    rows = [(m.message_id, received, m.type, m.user_id, m.anonymous_id, raw.ts(m.timestamp),
             m.event or m.name) for i, m in enumerate(messages) if first[m.message_id] == i]
    inserted = {str(r[0]) for r in await raw.insert_returning(
        "INSERT INTO events (message_id, received_at, type, user_id, anonymous_id, timestamp, "
        "name) VALUES {} ON CONFLICT DO NOTHING", rows, "message_id")}
    flags = [first[m.message_id] == i and m.message_id in inserted
             for i, m in enumerate(messages)]
    fresh = [m for m, new in zip(messages, flags, strict=True) if new]
    if fresh:
        book = await load_book(conn, fresh, now)
        apply_all(book, fresh, rules)
        await save_book(conn, book)
        if planner is not None and book.identified:
            await plan_surveys(conn, book, planner, now)
    return flags


def apply_all(book: Book, messages: list[Message], rules: BookRules) -> None:
    # Segment does not guarantee order: apply in event time so state follows it.
    for m in sorted(messages, key=lambda m: m.timestamp):
        apply_message(book, m, rules)
