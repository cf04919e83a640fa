"""Imported answers into the store: a batch of rows from another NPS tool's export matched to
users (by user id, else by address, else a new email-only user) and recorded as answered
surveys at their dates, in one transaction per batch.

What makes an import safe to repeat and safe for privacy is decided here, against the
database, in the same transaction as the write: a row whose identity (`import_key`) is
stored already changes nothing; a row whose user id is suppressed (erased), or whose
address key is (suppressed_addresses), is skipped, so an import never brings back a person
who asked to be erased. With `write` false the same decisions are made and nothing is
written (a dry run)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from storage.book_locks import BOOK_KEY  # taken exclusively: no intake meanwhile
from storage.fast_path import Steps, Values, fetch_in, insert_returning, many
from storage.nps_totals import Counted, record_change
from storage.states import SurveyState
from storage.survey_plan import email_key, new_token

EMAIL_ONLY_PREFIX = "npsd-email-"  # + the address key: a user known only by an address


class ImportRow(NamedTuple):
    """One checked row of an export (jobs/import_rows.py); a tuple, not a dataclass: a
    million of them are made, and a frozen dataclass costs several times more to build."""

    line: int
    user_id: str | None
    email: str | None
    score: int
    comment: str | None
    answered_at: datetime  # aware UTC
    key: str  # its identity (jobs.import_rows.identity)


class RowOutcome(NamedTuple):
    line: int
    key: str
    outcome: str  # "imported", "present" (already imported) or "suppressed" (erased)
    new_user: str | None = None  # the user this row creates, if any
    new_user_key: str | None = None  # that user's address key


@dataclass
class _Known:
    address_keys: dict[str, str | None]  # a row's email as written → its address key
    present: set[str]
    aliases: dict[str, str]
    suppressed: set[str]
    suppressed_keys: set[str]
    users: dict[str, str | None]  # user id → email
    by_address: dict[str, str]  # address key → user id
    created: dict[str, str | None] = field(default_factory=dict)  # new user → email


def import_rows(v: Values, rows: Sequence[ImportRow], source: str, now: datetime, *,
                sync: bool, write: bool) -> Steps[list[RowOutcome]]:
    """Decide each row (in order; a key twice in the batch is present the second time) and,
    with `write`, insert the new users, the answered surveys and a decision each."""
    if write:
        yield from v.exclusive(BOOK_KEY)
    known = yield from _lookup(rows)
    outcomes: list[RowOutcome] = []
    surveys: list[tuple[Any, ...]] = []
    created_at = v.ts(now)
    imported: dict[str, ImportRow] = {}  # by key: the first row of a key is the one written
    flags = {True: (0, v.flag(True)), False: (1, v.flag(False))}  # (synced_revision, needs_sync)
    for row in rows:
        outcome, user_id, address = _decide(row, known)
        if outcome != "imported" or user_id is None:
            outcomes.append(RowOutcome(row.line, row.key, outcome))
            continue
        created = user_id not in known.users and user_id not in known.created
        if created:
            known.created[user_id] = row.email
        if address is not None:
            known.by_address.setdefault(address, user_id)
        known.present.add(row.key)
        imported[row.key] = row
        outcomes.append(RowOutcome(row.line, row.key, "imported",
                                   user_id if created else None,
                                   known.address_keys.get(row.email) if created and row.email
                                   else None))
        # An email-only user has no id of yours: Segment would get a made-up userId.
        synced = sync and not user_id.startswith(EMAIL_ONLY_PREFIX)
        surveys.append(_survey(v, row, user_id, address, created_at,
                               flags[synced]))
    if write:
        yield from _write(v, known.created, surveys, source, now, imported)
    return outcomes


def _lookup(rows: Sequence[ImportRow]) -> Steps[_Known]:
    keys = {r.key for r in rows}
    present = {str(r[0]) for r in (yield from fetch_in(
        "SELECT import_key FROM surveys WHERE import_key IN ({})", keys))}
    named = {r.user_id for r in rows if r.user_id}
    aliases = {str(r[0]): str(r[1]) for r in (yield from fetch_in(
        "SELECT alias_id, user_id FROM aliases WHERE alias_id IN ({})", named))}
    keys_of = {e: email_key(e) for e in {r.email for r in rows if r.email}}
    addresses = {e.strip().lower() for e in keys_of}
    address_keys = {k for k in keys_of.values() if k}
    email_only = {EMAIL_ONLY_PREFIX + k for k in address_keys}
    ids = named | set(aliases.values()) | email_only
    suppressed = {str(r[0]) for r in (yield from fetch_in(
        "SELECT user_id FROM suppressions WHERE user_id IN ({})", ids))}
    suppressed_keys = {str(r[0]) for r in (yield from fetch_in(
        "SELECT email_key FROM suppressed_addresses WHERE email_key IN ({})", address_keys))}
    users = {str(r[0]): r[1] for r in (yield from fetch_in(
        "SELECT user_id, email FROM users WHERE user_id IN ({})", ids))}
    # By address: the user seen last holds it (a tie: the smallest id, so it is stable).
    candidates: dict[str, list[tuple[Any, str]]] = {}
    for user_id, email, last_seen in (yield from fetch_in(
            "SELECT user_id, email, last_seen FROM users "
            "WHERE NOT anonymous AND lower(email) IN ({})", addresses)):
        key = email_key(str(email))
        if key is not None:
            users[str(user_id)] = email
            candidates.setdefault(key, []).append((last_seen, str(user_id)))
    by_address = {k: max(sorted(c, key=lambda c: c[1]),
                         key=lambda c: (c[0] is not None, c[0] or ""))[1]
                  for k, c in candidates.items()}
    return _Known(keys_of, present, aliases, suppressed, suppressed_keys, users, by_address)


def _decide(row: ImportRow, known: _Known) -> tuple[str, str | None, str | None]:
    """(outcome, the user it belongs to, the address key for the survey)."""
    if row.key in known.present:
        return "present", None, None
    address = known.address_keys.get(row.email) if row.email else None
    if address is not None and address in known.suppressed_keys:
        return "suppressed", None, None
    if row.user_id:
        user_id = known.aliases.get(row.user_id, row.user_id)
        if row.user_id in known.suppressed or user_id in known.suppressed:
            return "suppressed", None, None
        if address is None:
            address = email_key(known.users.get(user_id) or known.created.get(user_id))
        return "imported", user_id, address
    assert address is not None  # a row names a user id or an address (jobs.import_rows)
    user_id = known.by_address.get(address, EMAIL_ONLY_PREFIX + address)
    if user_id in known.suppressed:
        return "suppressed", None, None
    return "imported", user_id, address


def _survey(v: Values, row: ImportRow, user_id: str, address: str | None, created_at: Any,
            sync_flags: tuple[int, Any]) -> tuple[Any, ...]:
    at = v.ts(row.answered_at)
    # Answered at its date, sent then (so it counts in reports and the re-survey interval),
    # its link closed (expires_at = the answer: nobody holds it), synced or marked as not to
    # be (revision 1 already "synced"). The key last: _write finds the row by it.
    return (user_id, new_token(), "survey", SurveyState.ANSWERED, at, created_at, at, 0, at,
            row.score, row.comment, at, 1, *sync_flags, address, row.key)


_SURVEY_COLUMNS = ("user_id, token, kind, state, due_at, created_at, sent_at, attempts, "
                   "expires_at, score, comment, answered_at, answer_revision, "
                   "synced_revision, needs_sync, email_key, import_key")


def _write(v: Values, created: dict[str, str | None], surveys: list[tuple[Any, ...]],
           source: str, now: datetime, imported: dict[str, ImportRow]) -> Steps[None]:
    at_now, no, yes = v.ts(now), v.flag(False), v.flag(True)
    yield from many(
        "INSERT INTO users (user_id, anonymous, email, traits, trait_times, event_count, "
        "session_count, unsubscribe_synced, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT DO NOTHING",
        [(u, no, email, '{"email": ' + json.dumps(email) + "}" if email else "{}", "{}", 0, 0,
          yes, at_now) for u, email in sorted(created.items())])
    inserted = yield from insert_returning(
        f"INSERT INTO surveys ({_SURVEY_COLUMNS}) VALUES {{}} ON CONFLICT DO NOTHING",
        surveys, "id, user_id, import_key")
    # Each written survey with its row: the answer as the row has it (no parsing back of
    # the stored text).
    written = [(survey_id, str(user_id), imported[key]) for survey_id, user_id, key in inserted]
    # Answered and sent at their date: into the running totals, in this transaction.
    yield from record_change(v, [], [Counted(u, row.answered_at, row.score, row.answered_at)
                                     for _, u, row in written])
    yield from many(
        "INSERT INTO decisions (user_id, at, survey_id, outcome, reason) VALUES (?, ?, ?, ?, ?)",
        [(user_id, at_now, survey_id, "imported",
          f"imported from {source}: answered {row.score} on "
          f"{row.answered_at.isoformat()[:19]}Z")  # ISO 8601 to the second, in UTC
         for survey_id, user_id, row in written])
