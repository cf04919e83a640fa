"""How one message changes the customer book (storage/book.py), in memory. Pure: no I/O.

Rows are plain dicts shaped like the tables. State follows event time: every trait carries
the time it was set, and an older message never overwrites a newer value.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from storage.book import Book, new_account, new_user
from storage.events import ACTIVITY_TYPES, Message
from storage.timeparse import parse_timestamp, stamp

# Traits kept as columns, with the spellings that arrive in the wild.
_FIELD_TRAITS = {
    "email": ("email",),
    "first_name": ("firstName", "first_name"),
    "last_name": ("lastName", "last_name"),
    "name": ("name",),
    "gender": ("gender",),
}
# B2B "Signed Up" properties that describe the person.
_SIGNUP_TRAITS = {"email": "email", "first_name": "firstName", "last_name": "lastName",
                  "name": "name", "username": "username", "title": "title"}


@dataclass(frozen=True)
class BookRules:
    """The customer-book rules as configured ([accounts]); the intake's book policy
    (storage.book.BookPolicy), passed to the store with every record()."""

    one_account_per_user: bool = False
    session_timeout: timedelta = timedelta(minutes=30)

    def apply(self, book: Book, message: Message) -> None:
        apply_message(book, message, self)


def apply_message(book: Book, m: Message, rules: BookRules) -> None:
    if m.type == "delete":
        _erase(book, m)
        return
    if book.suppressed:
        if _is_suppressed(book, m.user_id or m.anonymous_id) or (
                m.type == "alias" and _is_suppressed(book, m.previous_id or m.anonymous_id)):
            # A deleted user's later events are accepted and dropped; a group call still
            # writes its account (a company's traits), not the erased member.
            if m.type == "group" and m.group_id:
                _merge_traits(_account(book, m.group_id), m.traits, m.timestamp)
                book.dirty_accounts.add(m.group_id)
            return
        if m.user_id and _is_suppressed(book, m.anonymous_id):
            # Someone else on an erased person's old browser: theirs, without the erased
            # anonymousId (never folded in, never linked again).
            m = replace(m, anonymous_id=None)
    if m.type == "alias":
        source = m.previous_id or m.anonymous_id
        if m.user_id and source and source != m.user_id:
            _merge(book, book.resolve(source), book.resolve(m.user_id), source)
        return
    subject = _subject(book, m)
    if subject is None:
        if m.type == "group" and m.group_id:  # a group naming no one: the account only
            _merge_traits(_account(book, m.group_id), m.traits, m.timestamp)
            book.dirty_accounts.add(m.group_id)
        return
    user = _user(book, subject, anonymous=m.user_id is None)
    _context_fields(book, user, m)
    if m.type == "identify":
        _merge_traits(user, m.traits, m.timestamp)
        _refresh_fields(user)
        group = m.traits.get("groupId") or m.context_group_id
        if isinstance(group, str | int) and not isinstance(group, bool) and str(group):
            _link(book, user["user_id"], str(group), m.timestamp, rules)
        if user["email"] and not user["anonymous"]:
            book.identified[user["user_id"]] = m.timestamp
    elif m.type == "group" and m.group_id:
        account = _account(book, m.group_id)
        _merge_traits(account, m.traits, m.timestamp)
        book.dirty_accounts.add(m.group_id)
        if m.user_id:
            _link(book, user["user_id"], m.group_id, m.timestamp, rules)
    if m.type in ACTIVITY_TYPES:
        _activity(user, m.timestamp, rules.session_timeout)
        if m.type == "track":
            _b2b(book, user, m, rules)
    book.dirty_users.add(user["user_id"])


def _is_suppressed(book: Book, some_id: str | None) -> bool:
    if not some_id:
        return False
    return some_id in book.suppressed or book.resolve(some_id) in book.suppressed


def _subject(book: Book, m: Message) -> str | None:
    if m.user_id:
        subject = book.resolve(m.user_id)
        anon = m.anonymous_id
        if anon and anon != subject and anon not in book.aliases:
            # The anonymous visitor is now known: fold their profile into the user's.
            _merge(book, anon, subject, anon)
        return subject
    if m.anonymous_id:
        return book.resolve(m.anonymous_id)
    return None


def _user(book: Book, user_id: str, anonymous: bool) -> dict[str, Any]:
    user = book.users.get(user_id)
    if user is None:
        user = new_user(user_id, book.now, anonymous)
        book.users[user_id] = user
        book.new_users.add(user_id)
        book.removed_users.discard(user_id)
    elif user["anonymous"] and not anonymous:
        user["anonymous"] = False
    return user


def _account(book: Book, group_id: str) -> dict[str, Any]:
    account = book.accounts.get(group_id)
    if account is None:
        account = new_account(group_id, book.now)
        book.accounts[group_id] = account
        book.new_accounts.add(group_id)
    return account


def _merge_traits(row: dict[str, Any], traits: dict[str, Any], at: datetime) -> None:
    if not traits:
        return
    current = json.loads(row["traits"])
    times = json.loads(row["trait_times"])
    when = stamp(at)
    changed = False
    for key, value in traits.items():
        if times.get(key, "") <= when:
            current[key] = value
            times[key] = when
            changed = True
    if changed:
        row["traits"] = json.dumps(current, ensure_ascii=False, separators=(",", ":"))
        row["trait_times"] = json.dumps(times, separators=(",", ":"))


def _text(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()[:320]
    return None


def _refresh_fields(user: dict[str, Any]) -> None:
    traits = json.loads(user["traits"])
    for column, names in _FIELD_TRAITS.items():
        for name in names:
            if name in traits:
                user[column] = _text(traits[name])
                break
    created = traits.get("createdAt", traits.get("created_at"))
    if isinstance(created, int | float) and not isinstance(created, bool):
        from datetime import UTC
        from datetime import datetime as _dt

        try:
            seconds = created / 1000 if created > 1e11 else created
            user["created_at"] = _dt.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            pass
    elif created is not None:
        user["created_at"] = parse_timestamp(created)
    for column in ("timezone", "locale"):
        if column in traits and _text(traits[column]):
            user[column] = _text(traits[column])


def _context_fields(book: Book, user: dict[str, Any], m: Message) -> None:
    """context.timezone / context.locale fill the fields when the traits do not set them."""
    timezone = m.context_timezone[:64] if m.context_timezone else None
    locale = m.context_locale[:32] if m.context_locale else None
    if (timezone is None or timezone == user["timezone"]) and (
            locale is None or locale == user["locale"]):
        return  # nothing would change (analytics.js sends both on every event)
    traits = json.loads(user["traits"])
    if m.context_timezone and "timezone" not in traits and "timezone" not in m.traits:
        user["timezone"] = m.context_timezone[:64]
    if m.context_locale and "locale" not in traits and "locale" not in m.traits:
        user["locale"] = m.context_locale[:32]


def _activity(user: dict[str, Any], at: datetime, timeout: timedelta) -> None:
    first, last = user["first_seen"], user["last_seen"]
    user["event_count"] += 1
    if last is None:
        user["first_seen"] = user["last_seen"] = at
        user["session_count"] += 1
        return
    if at > last:
        if at - last > timeout:
            user["session_count"] += 1
        user["last_seen"] = at
    elif at < first:
        # Late-arriving history: a new session only when it lies well before the first one.
        if first - at > timeout:
            user["session_count"] += 1
        user["first_seen"] = at


def _link(book: Book, user_id: str, group_id: str, at: datetime, rules: BookRules) -> None:
    key = (user_id, group_id)
    existing = book.memberships.get(key)
    if existing is not None and existing["changed_at"] > at:
        return
    if existing is None:
        book.memberships[key] = {"user_id": user_id, "group_id": group_id, "active": True,
                                 "changed_at": at}
        book.new_memberships.add(key)
    else:
        existing.update(active=True, changed_at=at)
        book.dirty_memberships.add(key)
    _account(book, group_id)
    if rules.one_account_per_user:
        # Akita's rule: a later link moves the user out of every other account.
        for other_key, other in book.memberships.items():
            if (other_key[0] == user_id and other_key[1] != group_id and other["active"]
                    and other["changed_at"] <= at):
                other.update(active=False, changed_at=at)
                book.dirty_memberships.add(other_key)


def _unlink(book: Book, user_id: str, group_id: str, at: datetime) -> None:
    key = (user_id, group_id)
    existing = book.memberships.get(key)
    if existing is None:
        book.memberships[key] = {"user_id": user_id, "group_id": group_id, "active": False,
                                 "changed_at": at}
        book.new_memberships.add(key)
    elif existing["changed_at"] <= at:
        existing.update(active=False, changed_at=at)
        book.dirty_memberships.add(key)


_B2B_TRACKS = frozenset({"Signed Up", "Account Created", "Account Deleted",
                         "Account Added User", "Account Removed User"})


def _b2b(book: Book, user: dict[str, Any], m: Message, rules: BookRules) -> None:
    if m.event not in _B2B_TRACKS:
        return
    group = m.context_group_id or _text(m.properties.get("groupId")) or _text(
        m.properties.get("account_id"))
    uid = user["user_id"]
    if m.event == "Signed Up":
        traits = {_SIGNUP_TRAITS[k]: v for k, v in m.properties.items() if k in _SIGNUP_TRAITS}
        _merge_traits(user, traits, m.timestamp)
        _refresh_fields(user)
    elif m.event == "Account Created" and group:
        account = _account(book, group)
        name = m.properties.get("account_name")
        _merge_traits(account, {"name": name} if name else {}, m.timestamp)
        if account["created_at"] is None or account["created_at"] > m.timestamp:
            account["created_at"] = m.timestamp
        if account["deleted_at"] is not None and account["deleted_at"] <= m.timestamp:
            account["deleted_at"] = None
        book.dirty_accounts.add(group)
        if not user["anonymous"]:
            _link(book, uid, group, m.timestamp, rules)
    elif m.event == "Account Deleted" and group:
        account = _account(book, group)
        if account["deleted_at"] is None or account["deleted_at"] < m.timestamp:
            account["deleted_at"] = m.timestamp
        book.dirty_accounts.add(group)
        for key, membership in book.memberships.items():
            if key[1] == group and membership["changed_at"] <= m.timestamp:
                membership.update(active=False, changed_at=m.timestamp)
                book.dirty_memberships.add(key)
    elif m.event == "Account Added User" and group:
        _link(book, uid, group, m.timestamp, rules)
    elif m.event == "Account Removed User" and group:
        _unlink(book, uid, group, m.timestamp)


def _merge(book: Book, source: str, target: str, alias_id: str) -> None:
    """Fold `source` (an anonymous id or an alias previousId) into `target`."""
    if source != target:
        # `source` is `alias_id` resolved: when `alias_id` was already merged elsewhere,
        # that user's own id must follow its profile too, or its next call starts anew.
        for merged in dict.fromkeys((alias_id, source)):
            book.aliases[merged] = target
            book.new_aliases[merged] = target
    if source == target or source not in book.users:
        return
    old = book.users.pop(source)
    book.removed_users.add(source)
    book.new_users.discard(source)
    book.dirty_users.discard(source)
    book.merges.append((source, target))
    user = _user(book, target, anonymous=False)
    traits, times = json.loads(old["traits"]), json.loads(old["trait_times"])
    for key, value in traits.items():
        _merge_traits(user, {key: value}, _when(times.get(key)))
    _refresh_fields(user)
    for column in ("email", "first_name", "last_name", "name", "timezone", "locale",
                   "created_at", "gender"):
        if user[column] is None:
            user[column] = old[column]
    if old["first_seen"] is not None:
        if user["first_seen"] is None or old["first_seen"] < user["first_seen"]:
            user["first_seen"] = old["first_seen"]
        if user["last_seen"] is None or old["last_seen"] > user["last_seen"]:
            user["last_seen"] = old["last_seen"]
    user["event_count"] += old["event_count"]
    user["session_count"] += old["session_count"]
    user["unsubscribed_at"] = user["unsubscribed_at"] or old["unsubscribed_at"]
    for key, membership in list(book.memberships.items()):
        if key[0] == source and membership["active"]:
            _link(book, target, key[1], membership["changed_at"], BookRules())
    book.dirty_users.add(target)


def _when(text: str | None) -> datetime:
    from datetime import UTC

    parsed = parse_timestamp(text) if text else None
    return parsed or datetime(1970, 1, 1, tzinfo=UTC)


def _erase(book: Book, m: Message) -> None:
    """A Segment deletion request: forget the person and suppress the id."""
    for raw in (m.user_id, m.anonymous_id):
        if not raw:
            continue
        for some_id in {raw, book.resolve(raw)}:
            book.suppressed.add(some_id)
            book.erased_users.add(some_id)
            if book.users.pop(some_id, None) is not None:
                book.removed_users.add(some_id)
            book.new_users.discard(some_id)
            book.dirty_users.discard(some_id)
            book.identified.pop(some_id, None)
            for key in [k for k in book.memberships if k[0] == some_id]:
                del book.memberships[key]
                book.new_memberships.discard(key)
                book.dirty_memberships.discard(key)
