"""Recording accepted messages: dedup by messageId, apply to the book, plan surveys — all in
one transaction, so what is acknowledged is exactly what is committed."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from storage import deliveries
from storage.book import Book, BookPolicy
from storage.book_io import load_book, save_book, touched
from storage.book_locks import BookLocks
from storage.db import Database
from storage.deliveries import LoopPolicy
from storage.events import Message
from storage.fast_path import Steps, Values, run_async
from storage.sqlutil import EVENTS
from storage.survey_plan import Planner, Trigger, email_key, plan_surveys

# A transaction that lost a race between the per-key locks (keys learnt late,
# storage.book_locks) is run again from the start, this many times in all.
ATTEMPTS = 5
# Rounds of "lock the alias targets just read, read again" before giving up (503).
_ALIAS_ROUNDS = 8
_EVENT_COLUMNS = ("message_id", "received_at", "type", "timestamp", "name")


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
    for attempt in range(1, ATTEMPTS + 1):
        steps = record(Values(db.dialect, now), messages, rules, planner, now, loop)
        try:
            async with db.write() as conn:
                return await run_async(steps, conn)
        except Exception as exc:
            if attempt == ATTEMPTS or not db.dialect.retryable(exc):
                raise
    raise AssertionError("unreachable")


def record(
    v: Values, messages: list[Message], rules: BookPolicy, planner: Planner | None,
    now: datetime, loop: LoopPolicy | None = None,
) -> Steps[Recorded]:
    if v.users_cache is not None:
        yield from v.users_cache.begin()
    first: dict[str, int] = {}
    for index, m in enumerate(messages):
        first.setdefault(m.message_id, index)
    # Dedup: a messageId already stored is not inserted again, so not returned.
    received = v.ts(now)
    rows = [(m.message_id, received, m.type, v.ts(m.timestamp), m.event or m.name)
            for i, m in enumerate(messages) if first[m.message_id] == i]
    # In messageId order: another process inserting the same ids (a redelivery) waits on
    # them in this order too, so two multi-row inserts never wait for each other in a cycle.
    rows.sort()
    returned = yield from v.insert_new(EVENTS, _EVENT_COLUMNS, rows, returning="message_id")
    inserted = {str(r[0]) for r in returned}
    result = Recorded([first[m.message_id] == i and m.message_id in inserted
                       for i, m in enumerate(messages)])
    fresh = [m for m, new in zip(messages, result.new, strict=True) if new]
    if fresh:
        locks = BookLocks(v)
        book = yield from _load_locked(v, fresh, now, locks)
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
            # One survey per address: lock the addresses planned for.
            yield from locks.lock(addresses=_email_keys(book, triggers))
            result.scheduled = yield from plan_surveys(v, book, planner, now, triggers)
    if v.users_cache is not None:
        yield from v.users_cache.end()
    return result


def _load_locked(v: Values, messages: list[Message], now: datetime,
                 locks: BookLocks) -> Steps[Book]:
    """Lock the ids and accounts the messages name, load the book, and when it resolves an
    id to a user not locked yet, lock that one too and load again (a merge may have moved
    the alias meanwhile). Where the transaction holds the whole book, one load."""
    keys = touched(messages)
    yield from locks.share_book()
    yield from locks.lock(users=keys.ids, accounts=keys.groups)
    for _ in range(_ALIAS_ROUNDS):
        book = yield from load_book(v, messages, now, keys)
        if not (yield from locks.lock(users=book.aliases.values())):
            return book
    raise RuntimeError("aliases kept moving while this batch read them")


def _email_keys(book: Book, triggers: dict[str, Trigger]) -> Iterator[str]:
    """The address keys of the users a survey may be planned for (lazily: where no key is
    locked, none is computed)."""
    for user_id in {*book.identified, *triggers}:
        user = book.users.get(user_id)
        if user is not None and (k := email_key(user["email"])) is not None:
            yield k


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
