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
from typing import Any

from storage.book_locks import BOOK_KEY  # taken exclusively: no intake meanwhile
from storage.fast_path import Steps, Values, fetch_in, insert_returning, many
from storage.nps_totals import Counted, record_change
from storage.states import SurveyState
from storage.survey_plan import email_key, new_token

EMAIL_ONLY_PREFIX = "npsd-email-"  # + the address key: a user known only by an address


@dataclass(frozen=True)
class ImportRow:
    """One checked row of an export (jobs/import_rows.py)."""

    line: int
    user_id: str | None
    email: str | None
    score: int
    comment: str | None
    answered_at: datetime  # aware UTC
    key: str  # its identity (jobs.import_rows.identity)


@dataclass(frozen=True)
class RowOutcome:
    line: int
    key: str
    outcome: str  # "imported", "present" (already imported) or "suppressed" (erased)
    new_user: str | None = None  # the user this row creates, if any
    new_user_key: str | None = None  # that user's address key


@dataclass
class _Known:
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
        outcomes.append(RowOutcome(row.line, row.key, "imported",
                                   user_id if created else None,
                                   email_key(row.email) if created else None))
        # An email-only user has no id of yours: Segment would get a made-up userId.
        synced = sync and not user_id.startswith(EMAIL_ONLY_PREFIX)
        surveys.append(_survey(v, row, user_id, address, now, synced=synced))
    if write:
        yield from _write(v, known.created, surveys, source, now)
    return outcomes


def _lookup(rows: Sequence[ImportRow]) -> Steps[_Known]:
    keys = {r.key for r in rows}
    present = {str(r[0]) for r in (yield from fetch_in(
        "SELECT import_key FROM surveys WHERE import_key IN ({})", keys))}
    named = {r.user_id for r in rows if r.user_id}
    aliases = {str(r[0]): str(r[1]) for r in (yield from fetch_in(
        "SELECT alias_id, user_id FROM aliases WHERE alias_id IN ({})", named))}
    addresses = {r.email.strip().lower() for r in rows if r.email}
    address_keys = {k for a in addresses if (k := email_key(a))}
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
    return _Known(present, aliases, suppressed, suppressed_keys, users, by_address)


def _decide(row: ImportRow, known: _Known) -> tuple[str, str | None, str | None]:
    """(outcome, the user it belongs to, the address key for the survey)."""
    if row.key in known.present:
        return "present", None, None
    address = email_key(row.email)
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


def _survey(v: Values, row: ImportRow, user_id: str, address: str | None, now: datetime, *,
            synced: bool) -> tuple[Any, ...]:
    at = v.ts(row.answered_at)
    # Answered at its date, sent then (so it counts in reports and the re-survey interval),
    # its link closed (expires_at = the answer: nobody holds it), synced or marked as not to
    # be (revision 1 already "synced").
    return (user_id, new_token(), "survey", SurveyState.ANSWERED, at, v.ts(now), at, 0, at,
            row.score, row.comment, at, 1, 0 if synced else 1, v.flag(synced), address,
            row.key)


_SURVEY_COLUMNS = ("user_id, token, kind, state, due_at, created_at, sent_at, attempts, "
                   "expires_at, score, comment, answered_at, answer_revision, "
                   "synced_revision, needs_sync, email_key, import_key")


def _write(v: Values, created: dict[str, str | None], surveys: list[tuple[Any, ...]],
           source: str, now: datetime) -> Steps[None]:
    yield from many(
        "INSERT INTO users (user_id, anonymous, email, traits, trait_times, event_count, "
        "session_count, unsubscribe_synced, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT DO NOTHING",
        [(u, v.flag(False), email, json.dumps({"email": email} if email else {}), "{}", 0, 0,
          v.flag(True), v.ts(now)) for u, email in sorted(created.items())])
    inserted = yield from insert_returning(
        f"INSERT INTO surveys ({_SURVEY_COLUMNS}) VALUES {{}} ON CONFLICT DO NOTHING",
        surveys, "id, user_id, score, answered_at")
    reader = v.time_reader()
    # Answered and sent at their date: into the running totals, in this transaction.
    yield from record_change(v, [], [Counted(str(u), reader(at), int(score), reader(at))
                                     for _, u, score, at in inserted])
    yield from many(
        "INSERT INTO decisions (user_id, at, survey_id, outcome, reason) VALUES (?, ?, ?, ?, ?)",
        [(user_id, v.ts(now), survey_id, "imported",
          f"imported from {source}: answered {score} on "
          f"{reader(at).strftime('%Y-%m-%dT%H:%M:%SZ')}")
         for survey_id, user_id, score, at in inserted])
