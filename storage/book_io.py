"""Loading the part of the customer book a batch touches, and writing it back.

A batch costs a handful of statements whatever its size: the rows are read with IN lists,
changed in memory (jobs/book_rules.py) and written back with executemany (the users, on
PostgreSQL, as one statement over arrays: Values.insert_new/update_rows). Written as plans
of SQL steps for the intake's fast path (storage/fast_path.py), so the same code runs on
both backends.
"""

from __future__ import annotations

from itertools import compress
from operator import itemgetter, ne
from typing import Any, NamedTuple

from storage.book import Book
from storage.events import Message
from storage.fast_path import Fetch, Steps, Values, execute_in, fetch_in, many
from storage.nps_totals import (
    active_groups,
    active_groups_each,
    count_members,
    refresh_accounts,
    save_accounts,
    users_with_answers,
)
from storage.personal_data import erase_rows
from storage.sqlutil import ACCOUNTS, MEMBERSHIPS, USERS
from storage.survey_plan import email_key

_USER_TIMES = ("created_at", "first_seen", "last_seen", "unsubscribed_at", "updated_at")
_USER_FLAGS = ("anonymous", "unsubscribe_synced")
_USER_TIME_SET, _USER_FLAG_SET = frozenset(_USER_TIMES), frozenset(_USER_FLAGS)
_USER_COLUMNS = tuple(c.name for c in USERS.columns)
# _load_users spells the columns out, in this order.
if _USER_COLUMNS != (
        "user_id", "anonymous", "email", "first_name", "last_name", "name", "gender",
        "timezone", "locale", "created_at", "traits", "trait_times", "first_seen",
        "last_seen", "event_count", "session_count", "unsubscribed_at", "unsubscribe_synced",
        "updated_at"):
    raise ImportError(f"storage.book_io._load_users does not read users {_USER_COLUMNS}")
# What an update compares to find the changed columns (updated_at follows any change).
_USER_COMPARED = tuple(c for c in _USER_COLUMNS[1:] if c != "updated_at")
_user_compared = itemgetter(*_USER_COMPARED)
_ACCOUNT_TIMES = ("created_at", "deleted_at", "updated_at")
_ACCOUNT_COLUMNS = tuple(c.name for c in ACCOUNTS.columns)
_MEMBERSHIP_COLUMNS = tuple(c.name for c in MEMBERSHIPS.columns)


class Touched(NamedTuple):
    """The keys of the book a batch reads: the ids its messages name, their accounts."""

    ids: set[str]
    groups: set[str]
    deleted_groups: set[str]
    memberships: bool  # whether any message may change memberships


def touched(messages: list[Message]) -> Touched:
    ids: set[str] = set()
    groups: set[str] = set()
    deleted_groups: set[str] = set()
    touches_memberships = False
    for m in messages:  # one pass: this runs for every message of every group
        if m.user_id:
            ids.add(m.user_id)
        if m.anonymous_id:
            ids.add(m.anonymous_id)
        if m.previous_id:
            ids.add(m.previous_id)
        if m.group_id:
            groups.add(m.group_id)
        if m.context_group_id:
            groups.add(m.context_group_id)
        if m.type == "identify":
            g = m.traits.get("groupId")  # the book takes numbers too (apply_message)
            if isinstance(g, str | int) and not isinstance(g, bool) and str(g):
                groups.add(str(g))
        if m.type == "track" and m.event == "Account Deleted" and m.context_group_id:
            deleted_groups.add(m.context_group_id)
        touches_memberships = touches_memberships or _touches_memberships(m)
    return Touched(ids, groups, deleted_groups, touches_memberships)


def load_book(v: Values, messages: list[Message], now: Any,
              keys: Touched | None = None) -> Steps[Book]:
    ids, groups, deleted_groups, touches_memberships = keys or touched(messages)
    ids = set(ids)
    # Aliases and suppressions in one round trip (a suppressed id may be an alias target).
    aliases: dict[str, str] = {}
    suppressed: set[str] = set()
    for kind, first, second in (yield from fetch_in(_ALIASES_AND_SUPPRESSIONS, ids)):
        if kind == "a":
            aliases[str(first)] = str(second)
        else:
            suppressed.add(str(first))
    ids |= set(aliases.values())
    users = yield from _load_users(v, ids)
    accounts = yield from _load_accounts(v, groups)
    memberships: dict[tuple[str, str], dict[str, Any]] = {}
    if touches_memberships:
        # Locked too on PostgreSQL: a membership row is keyed by a user and an account, and
        # a batch may change it holding the lock of only one of them (storage.book_locks).
        lock = v.for_update()
        rows = yield from fetch_in(_SELECT_MEMBERSHIPS.format(column="user_id") + lock, ids)
        rows += yield from fetch_in(_SELECT_MEMBERSHIPS.format(column="group_id") + lock,
                                    deleted_groups)
        for values in rows:
            row = dict(zip(_MEMBERSHIP_COLUMNS, values, strict=True))
            row["active"] = bool(row["active"])
            row["changed_at"] = v.dt(row["changed_at"])
            memberships[(row["user_id"], row["group_id"])] = row
    missing = {g for _, g in memberships if g not in accounts}
    if missing:
        accounts.update((yield from _load_accounts(v, missing)))
    book = Book(users=users, accounts=accounts, memberships=memberships, aliases=aliases,
                suppressed=suppressed, now=now)
    book.loaded = {u: _user_compared(row) for u, row in users.items()}
    book.memberships_loaded = {k: bool(r["active"]) for k, r in memberships.items()}
    return book


_ALIASES_AND_SUPPRESSIONS = (
    "SELECT 'a', alias_id, user_id FROM aliases WHERE alias_id IN ({0}) UNION ALL "
    "SELECT 's', user_id, NULL FROM suppressions WHERE user_id IN ({0}) "
    "OR user_id IN (SELECT user_id FROM aliases WHERE alias_id IN ({0}))")
_SELECT_USERS = f"SELECT {', '.join(_USER_COLUMNS)} FROM users WHERE user_id IN ({{}})"
_SELECT_ACCOUNTS = f"SELECT {', '.join(_ACCOUNT_COLUMNS)} FROM accounts WHERE group_id IN ({{}})"
_SELECT_MEMBERSHIPS = (f"SELECT {', '.join(_MEMBERSHIP_COLUMNS)} FROM memberships "
                       "WHERE {column} IN ({{}})")


def _load_users(v: Values, ids: set[str]) -> Steps[dict[str, dict[str, Any]]]:
    users: dict[str, dict[str, Any]] = {}
    if v.users_cache is not None and ids:
        users, ids = v.users_cache.take(ids)
        if not ids:
            return users
    t = v.time_reader()
    # One dict display per row (this runs for every user of every group): twice as fast as
    # dict(zip(...)) followed by a pass over the time and flag columns.
    for (user_id, anonymous, email, first_name, last_name, name, gender, timezone, locale,
         created_at, traits, trait_times, first_seen, last_seen, event_count, session_count,
         unsubscribed_at, unsubscribe_synced, updated_at,
         ) in (yield from fetch_in(_SELECT_USERS + v.for_update(), ids)):
        users[user_id] = {
            "user_id": user_id, "anonymous": bool(anonymous), "email": email,
            "first_name": first_name, "last_name": last_name, "name": name, "gender": gender,
            "timezone": timezone, "locale": locale,
            "created_at": None if created_at is None else t(created_at),
            "traits": traits, "trait_times": trait_times,
            "first_seen": None if first_seen is None else t(first_seen),
            "last_seen": None if last_seen is None else t(last_seen),
            "event_count": event_count, "session_count": session_count,
            "unsubscribed_at": None if unsubscribed_at is None else t(unsubscribed_at),
            "unsubscribe_synced": bool(unsubscribe_synced),
            "updated_at": None if updated_at is None else t(updated_at),
        }
    return users


def _load_accounts(v: Values, groups: set[str]) -> Steps[dict[str, dict[str, Any]]]:
    accounts: dict[str, dict[str, Any]] = {}
    for values in (yield from fetch_in(_SELECT_ACCOUNTS, groups)):
        row = dict(zip(_ACCOUNT_COLUMNS, values, strict=True))
        for column in _ACCOUNT_TIMES:
            row[column] = v.dt(row[column])
        accounts[row["group_id"]] = row
    return accounts


def _touches_memberships(m: Message) -> bool:
    """Plain activity from a known id never changes memberships: skip loading them."""
    if m.type not in ("track", "page", "screen"):
        return True
    if m.user_id and m.anonymous_id and m.user_id != m.anonymous_id:
        return True  # may fold an anonymous profile (and its accounts) into the user
    return m.type == "track" and m.event in _B2B_EVENTS


_B2B_EVENTS = frozenset({"Account Created", "Account Deleted", "Account Added User",
                         "Account Removed User"})


def _user_values(v: Values, row: dict[str, Any], columns: tuple[str, ...]) -> list[Any]:
    ts, flag = v.ts, v.flag
    return [ts(row[c]) if c in _USER_TIME_SET else flag(bool(row[c])) if c in _USER_FLAG_SET
            else row[c] for c in columns]


def _save_users(v: Values, book: Book) -> Steps[None]:
    gone = book.removed_users | book.erased_users
    cache = v.users_cache
    if gone:
        yield from execute_in("DELETE FROM users WHERE user_id IN ({})", gone)
    if book.erased_users and cache is not None:
        # Erased rows were taken out of the cache with the rest of the group's rows; this
        # is a precaution (storage/user_cache.py).
        cache.forget_all()
    new = [book.users[u] for u in sorted(book.new_users) if u in book.users]
    for row in new:
        row["updated_at"] = book.now
    yield from v.insert_new(USERS, _USER_COLUMNS,
                            [_user_values(v, row, _USER_COLUMNS) for row in new])
    # Write only the columns that changed, grouped by which ones (activity is the usual set).
    groups: dict[tuple[str, ...], list[list[Any]]] = {}
    users, loaded, now = book.users, book.loaded, book.now
    now_value = v.ts(now)
    dirty = book.dirty_users - book.new_users
    for user_id in sorted(dirty):
        current = users.get(user_id)
        if current is None:
            continue
        before = loaded.get(user_id)
        if before is None:
            changed = _USER_COMPARED
        else:
            after = _user_compared(current)
            if after == before:
                continue
            changed = tuple(compress(_USER_COMPARED, map(ne, after, before)))
        current["updated_at"] = now
        rows = groups.get(changed)
        if rows is None:
            rows = groups[changed] = []
        rows.append([*_user_values(v, current, changed), now_value, user_id])
    for changed, rows in groups.items():
        yield from v.update_rows(USERS, (*changed, "updated_at"), "user_id", rows)
    if cache is not None:
        # The rows read that now hold what is stored: the dirty ones just written (or found
        # unchanged) and the others as read (one changed but not marked dirty stays out).
        # New rows are read back next time, the way every row is known at first.
        cache.keep(row for u, row in users.items() if u in loaded and (
            u in dirty or _user_compared(row) == loaded[u]))


def save_book(v: Values, book: Book) -> Steps[None]:
    yield from _save_users(v, book)
    yield from _save_aliases(v, book)
    yield from _save_accounts(v, book)
    yield from _save_memberships(v, book)
    # Accounts whose members (with answers) change here are recounted once it is done.
    changed = book.new_memberships | book.dirty_memberships
    merged = {u for pair in book.merges for u in pair}
    members: dict[str, int] = {}
    for key in changed:
        now_active = key in book.memberships and bool(book.memberships[key]["active"])
        delta = now_active - book.memberships_loaded.get(key, False)
        members[key[1]] = members.get(key[1], 0) + delta
    recount: set[str] = set()
    if merged:  # the merged-away ids' memberships are deleted below
        for group_id in (yield from active_groups_each({s for s, _ in book.merges})):
            members[group_id] = members.get(group_id, 0) - 1
    yield from count_members(members)
    if changed or merged:
        answered = yield from users_with_answers(merged | {u for u, _ in changed})
        recount = {g for u, g in changed if u in answered}
        recount |= yield from active_groups(
            u for pair in book.merges if answered.intersection(pair) for u in pair)
    for source, target in book.merges:
        yield Fetch("UPDATE surveys SET user_id = ? WHERE user_id = ?", (target, source))
        yield Fetch("UPDATE decisions SET user_id = ? WHERE user_id = ?", (target, source))
        yield Fetch("UPDATE deliveries SET user_id = ? WHERE user_id = ?", (target, source))
        yield Fetch("DELETE FROM memberships WHERE user_id = ?", (source,))
    if book.erased_users:
        yield from _erase(v, book, sorted(book.erased_users))
    yield from refresh_accounts(v, recount)


def _save_aliases(v: Values, book: Book) -> Steps[None]:
    yield from many(
        "INSERT INTO aliases (alias_id, user_id, created_at) VALUES (?, ?, ?) "
        "ON CONFLICT (alias_id) DO UPDATE SET user_id = excluded.user_id",
        [(a, u, v.ts(book.now)) for a, u in sorted(book.new_aliases.items())])
    for source, target in book.merges:
        yield Fetch("UPDATE aliases SET user_id = ? WHERE user_id = ?", (target, source))


def _account_values(v: Values, row: dict[str, Any], columns: tuple[str, ...]) -> list[Any]:
    return [v.ts(row[c]) if c in _ACCOUNT_TIMES else row[c] for c in columns]


def _save_accounts(v: Values, book: Book) -> Steps[None]:
    new = [book.accounts[g] for g in sorted(book.new_accounts)]
    for row in new:
        row["updated_at"] = book.now
    yield from many(
        f"INSERT INTO accounts ({', '.join(_ACCOUNT_COLUMNS)}) VALUES "
        f"({', '.join('?' * len(_ACCOUNT_COLUMNS))}) ON CONFLICT DO NOTHING",
        [_account_values(v, row, _ACCOUNT_COLUMNS) for row in new])
    changed = [book.accounts[g] for g in sorted(book.dirty_accounts - book.new_accounts)]
    for row in changed:
        row["updated_at"] = book.now
    columns = _ACCOUNT_COLUMNS[1:]
    yield from many(
        f"UPDATE accounts SET {', '.join(f'{c} = ?' for c in columns)} WHERE group_id = ?",
        [[*_account_values(v, row, columns), row["group_id"]] for row in changed])
    yield from save_accounts(new + changed)  # the accounts list's names and liveness


def _save_memberships(v: Values, book: Book) -> Steps[None]:
    rows = [book.memberships[k] for k in sorted(book.new_memberships | book.dirty_memberships)
            if k in book.memberships]
    yield from many(
        "INSERT INTO memberships (user_id, group_id, active, changed_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (user_id, group_id) DO UPDATE SET active = excluded.active, "
        "changed_at = excluded.changed_at",
        [(r["user_id"], r["group_id"], v.flag(bool(r["active"])), v.ts(r["changed_at"]))
         for r in rows])


def _erase(v: Values, book: Book, user_ids: list[str]) -> Steps[None]:
    """Forget everything about these people (storage.personal_data lists where it lives);
    keep only the suppression of their ids."""
    user_ids = sorted((yield from _with_alias_ids(user_ids)))
    # The day only, and (SQLite) in no order: nothing ties an address key to the erased id
    # it was erased with.
    day = v.ts(book.now.replace(hour=0, minute=0, second=0, microsecond=0))
    yield from many("INSERT INTO suppressions (user_id, suppressed_at) VALUES (?, ?) "
                    "ON CONFLICT DO NOTHING", [(u, day) for u in user_ids])
    # Their addresses, as keys (hashes), so an import's email-only row cannot bring them back.
    keys = {email_key(str(r[0])) for r in (yield from fetch_in(
        "SELECT email FROM users WHERE email IS NOT NULL AND user_id IN ({})", user_ids))}
    keys.update(str(r[0]) for r in (yield from fetch_in(
        "SELECT email_key FROM surveys WHERE email_key IS NOT NULL AND user_id IN ({})",
        user_ids)))
    column, value = v.dialect.random_rowid
    yield from many(f"INSERT INTO suppressed_addresses ({column}email_key, suppressed_at) "
                    f"VALUES ({value}?, ?) ON CONFLICT DO NOTHING",
                    [(k, day) for k in sorted(k for k in keys if k)])
    book.erased_surveys += yield from erase_rows(v, user_ids)


def _with_alias_ids(user_ids: list[str]) -> Steps[set[str]]:
    """These ids and every id aliased to them (an anonymousId folded in at sign-in, a
    previousId): the person's old browser may still send events under one of those."""
    ids, new = set(user_ids), set(user_ids)
    for _ in range(8):  # aliases of aliases, as deep as Book.resolve follows them
        found = {str(r[0]) for r in (yield from fetch_in(
            "SELECT alias_id FROM aliases WHERE user_id IN ({})", new))}
        new = found - ids
        if not new:
            break
        ids |= new
    return ids
