"""The customer book a batch of messages touches, in memory: loaded by storage/book_io.py,
changed by the book rules (jobs/book_rules.py, reached through the BookPolicy the daemon
passes to Store.record) and written back. Storage holds the data; the rules are jobs'."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from storage.events import Message


class BookPolicy(Protocol):
    """How one message changes the book (jobs.book_rules.BookRules)."""

    def apply(self, book: Book, message: Message) -> None: ...


@dataclass
class Book:
    """The part of the book a batch touches, loaded up front and written back at the end."""

    users: dict[str, dict[str, Any]]
    accounts: dict[str, dict[str, Any]]
    memberships: dict[tuple[str, str], dict[str, Any]]
    aliases: dict[str, str]
    suppressed: set[str]
    now: datetime
    new_users: set[str] = field(default_factory=set)
    dirty_users: set[str] = field(default_factory=set)
    removed_users: set[str] = field(default_factory=set)  # merged away by alias
    erased_users: set[str] = field(default_factory=set)  # deletion requests
    erased_surveys: list[int] = field(default_factory=list)  # their surveys, once deleted
    new_accounts: set[str] = field(default_factory=set)
    dirty_accounts: set[str] = field(default_factory=set)
    dirty_memberships: set[tuple[str, str]] = field(default_factory=set)
    new_memberships: set[tuple[str, str]] = field(default_factory=set)
    new_aliases: dict[str, str] = field(default_factory=dict)
    merges: list[tuple[str, str]] = field(default_factory=list)  # (from, into)
    identified: dict[str, datetime] = field(default_factory=dict)  # user → identify time
    loaded: dict[str, tuple[Any, ...]] = field(default_factory=dict)  # rows as read (storage)
    # Whether each loaded membership was active as read (storage: the member counts).
    memberships_loaded: dict[tuple[str, str], bool] = field(default_factory=dict)

    def resolve(self, some_id: str) -> str:
        seen = 0
        while some_id in self.aliases and seen < 8:
            some_id, seen = self.aliases[some_id], seen + 1
        return some_id


def new_user(user_id: str, now: datetime, anonymous: bool = False) -> dict[str, Any]:
    return {
        "user_id": user_id, "anonymous": anonymous, "email": None, "first_name": None,
        "last_name": None, "name": None, "gender": None, "timezone": None, "locale": None,
        "created_at": None, "traits": "{}", "trait_times": "{}", "first_seen": None,
        "last_seen": None, "event_count": 0, "session_count": 0, "unsubscribed_at": None,
        "unsubscribe_synced": True, "updated_at": now,
    }


def new_account(group_id: str, now: datetime) -> dict[str, Any]:
    return {"group_id": group_id, "traits": "{}", "trait_times": "{}", "created_at": None,
            "deleted_at": None, "updated_at": now}
