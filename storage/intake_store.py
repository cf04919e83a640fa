"""Recording accepted messages: dedup by messageId, apply to the book, plan surveys — all in
one transaction, so what is acknowledged is exactly what is committed."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa

from storage import deliveries
from storage.book import Book, BookPolicy
from storage.book_io import load_book, save_book
from storage.db import Database
from storage.deliveries import LoopPolicy
from storage.events import Message
from storage.fast_path import Steps, Values, insert_returning, run_async
from storage.survey_plan import Planner, Trigger, plan_surveys

_BOOK_LOCK_KEY = 0x6E707365  # PostgreSQL: one book writer at a time across processes


@dataclass
class Recorded:
    new: list[bool]  # per message: True if new, False if a duplicate
    scheduled: list[tuple[str, datetime]] = field(default_factory=list)  # (user, due)
    erased_surveys: list[int] = field(default_factory=list)  # surveys of erased users
    erased_users: int = 0


async def record_messages(
    db: Database, messages: list[Message], rules: BookPolicy, planner: Planner | None,
    now: datetime, loop: LoopPolicy | None = None,
) -> Recorded:
    """Commit the messages in one transaction, from the event loop. (On SQLite the group
    committer runs `record` in the writer connection's thread instead: storage.group_commit.)"""
    if not messages:
        return Recorded([])
    steps = record(Values(db.dialect, now), messages, rules, planner, now, loop)
    async with db.write() as conn:
        if not db.is_sqlite:
            await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"),
                               {"k": _BOOK_LOCK_KEY})
        return await run_async(steps, conn)


def record(
    v: Values, messages: list[Message], rules: BookPolicy, planner: Planner | None,
    now: datetime, loop: LoopPolicy | None = None,
) -> Steps[Recorded]:
    first: dict[str, int] = {}
    for index, m in enumerate(messages):
        first.setdefault(m.message_id, index)
    # Dedup: a messageId already stored is not inserted again, so not returned.
    received = v.ts(now)
    rows = [(m.message_id, received, m.type, v.ts(m.timestamp), m.event or m.name)
            for i, m in enumerate(messages) if first[m.message_id] == i]
    inserted = {str(r[0]) for r in (yield from insert_returning(
        "INSERT INTO events (message_id, received_at, type, timestamp, name) VALUES {} "
        "ON CONFLICT DO NOTHING", rows, "message_id"))}
    result = Recorded([first[m.message_id] == i and m.message_id in inserted
                       for i, m in enumerate(messages)])
    fresh = [m for m, new in zip(messages, result.new, strict=True) if new]
    if fresh:
        book = yield from load_book(v, fresh, now)
        apply_all(book, fresh, rules)
        yield from save_book(v, book)
        result.erased_surveys = book.erased_surveys
        result.erased_users = len(book.erased_users)
        erased = sorted(book.erased_users & book.removed_users)  # users npsd knew
        if erased and loop is not None and loop.active:
            # Their pending alerts and webhooks went with the rest (personal_data); this
            # says so to the receivers, with the id only.
            yield from deliveries.insert(v, loop.on_erasure(erased, now), now)
        triggers = {} if planner is None else triggered(book, fresh, planner.trigger_events)
        if planner is not None and (book.identified or triggers):
            result.scheduled = yield from plan_surveys(v, book, planner, now, triggers)
    return result


def triggered(book: Book, messages: list[Message], names: frozenset[str]
              ) -> dict[str, Trigger]:
    """Known users whose track named a trigger event: the first such event per user."""
    found: dict[str, Trigger] = {}
    if not names:
        return found
    for m in messages:
        if m.type != "track" or m.event not in names or not m.user_id:
            continue
        user_id = book.resolve(m.user_id)
        user = book.users.get(user_id)
        if (user is None or user["anonymous"] or user_id in book.erased_users
                or user_id in book.suppressed or m.user_id in book.suppressed):
            continue
        if user_id not in found or m.timestamp < found[user_id][1]:
            found[user_id] = (m.event, m.timestamp)
    return found


def apply_all(book: Book, messages: list[Message], rules: BookPolicy) -> None:
    # Segment does not guarantee order: apply in event time so state follows it.
    for m in sorted(messages, key=lambda m: m.timestamp):
        rules.apply(book, m)
