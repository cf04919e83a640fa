"""Helpers for the customer-book table tests: fixture-shaped messages parsed by
daemon.messages.parse_message, as intake does, applied to an in-memory Book."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from daemon.messages import parse_message
from jobs.book_rules import BookRules, apply_message
from storage.book import Book
from storage.events import Message

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
SEC = timedelta(seconds=1)
DEFAULT = BookRules()
ONE_ACCOUNT = BookRules(one_account_per_user=True)


def ts(offset: timedelta = timedelta(0)) -> str:
    return (T0 + offset).isoformat().replace("+00:00", "Z")


def book(**rows: Any) -> Book:
    return Book(users=rows.get("users", {}), accounts=rows.get("accounts", {}),
                memberships=rows.get("memberships", {}), aliases=rows.get("aliases", {}),
                suppressed=rows.get("suppressed", set()), now=T0)


_counter = iter(range(10**9))


def message(kind: str, at: timedelta = timedelta(0), **fields: Any) -> Message:
    raw: dict[str, Any] = {"type": kind, "messageId": f"m-{next(_counter)}",
                           "timestamp": ts(at), **fields}
    return parse_message(raw, T0)


def identify(user: str | None = "u1", at: timedelta = timedelta(0), **fields: Any) -> Message:
    if user is not None:
        fields["userId"] = user
    return message("identify", at, **fields)


def track(event: str, user: str | None = "u1", at: timedelta = timedelta(0),
          **fields: Any) -> Message:
    if user is not None:
        fields["userId"] = user
    return message("track", at, event=event, **fields)


def page(user: str | None = "u1", at: timedelta = timedelta(0), **fields: Any) -> Message:
    if user is not None:
        fields["userId"] = user
    return message("page", at, **fields)


def apply(b: Book, *messages: Message, rules: BookRules = DEFAULT) -> Book:
    for m in messages:
        apply_message(b, m, rules)
    return b


def traits(row: dict[str, Any]) -> dict[str, Any]:
    return dict(json.loads(row["traits"]))


def times(row: dict[str, Any]) -> dict[str, str]:
    return dict(json.loads(row["trait_times"]))


def stamp(offset: timedelta = timedelta(0)) -> str:
    return (T0 + offset).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def active(b: Book) -> set[tuple[str, str]]:
    return {key for key, row in b.memberships.items() if row["active"]}
