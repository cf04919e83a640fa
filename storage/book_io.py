"""Loading the part of the customer book a batch touches, and writing it back.

A batch costs a handful of statements whatever its size: the rows are read with IN lists,
changed in memory (storage.book_rules) and written back with executemany.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.book_rules import Book
from storage.db import utc
from storage.events import Message
from storage.raw import RawSQL
from storage.sqlutil import (
    ACCOUNTS,
    ALIASES,
    DECISIONS,
    EVENTS,
    MEMBERSHIPS,
    SUPPRESSIONS,
    SURVEYS,
    USERS,
    delete_in,
    insert,
    select_in,
)

_USER_TIMES = ("created_at", "first_seen", "last_seen", "unsubscribed_at", "updated_at")
_ACCOUNT_TIMES = ("created_at", "deleted_at", "updated_at")


def _fix_times(row: dict[str, Any], columns: tuple[str, ...]) -> dict[str, Any]:
    for column in columns:
        row[column] = utc(row[column])
    return row


async def load_book(conn: AsyncConnection, messages: list[Message], now: Any) -> Book:
    ids: set[str] = set()
    groups: set[str] = set()
    deleted_groups: set[str] = set()
    for m in messages:
        ids.update(i for i in (m.user_id, m.anonymous_id, m.previous_id) if i)
        for g in (m.group_id, m.context_group_id, m.traits.get("groupId")):
            if isinstance(g, str) and g:
                groups.add(g)
        if m.type == "track" and m.event == "Account Deleted" and m.context_group_id:
            deleted_groups.add(m.context_group_id)
    raw = await RawSQL.of(conn)
    # Aliases and suppressions in one round trip (a suppressed id may be an alias target).
    aliases: dict[str, str] = {}
    suppressed: set[str] = set()
    for kind, first, second in await raw.fetch_in(_ALIASES_AND_SUPPRESSIONS, ids):
        if kind == "a":
            aliases[str(first)] = str(second)
        else:
            suppressed.add(str(first))
    ids |= set(aliases.values())
    users = await _load_users(raw, ids)
    accounts = {r["group_id"]: _fix_times(r, _ACCOUNT_TIMES) for r in
                await select_in(conn, ACCOUNTS, ACCOUNTS.c.group_id, groups)}
    memberships: dict[tuple[str, str], dict[str, Any]] = {}
    rows: list[dict[str, Any]] = []
    if any(_touches_memberships(m) for m in messages):
        rows += await select_in(conn, MEMBERSHIPS, MEMBERSHIPS.c.user_id, ids)
        rows += await select_in(conn, MEMBERSHIPS, MEMBERSHIPS.c.group_id, deleted_groups)
    for r in rows:
        r["changed_at"] = utc(r["changed_at"])
        memberships[(r["user_id"], r["group_id"])] = r
    for key in memberships:
        if key[1] not in accounts:
            groups.add(key[1])
    missing = groups - set(accounts)
    if missing:
        for r in await select_in(conn, ACCOUNTS, ACCOUNTS.c.group_id, missing):
            accounts[r["group_id"]] = _fix_times(r, _ACCOUNT_TIMES)
    book = Book(users=users, accounts=accounts, memberships=memberships, aliases=aliases,
                suppressed=suppressed, now=now)
    book.loaded = {u: dict(row) for u, row in users.items()}
    return book


_ALIASES_AND_SUPPRESSIONS = (
    "SELECT 'a', alias_id, user_id FROM aliases WHERE alias_id IN ({0}) UNION ALL "
    "SELECT 's', user_id, NULL FROM suppressions WHERE user_id IN ({0}) "
    "OR user_id IN (SELECT user_id FROM aliases WHERE alias_id IN ({0}))")
_USER_COLUMNS = tuple(c.name for c in USERS.columns)
_USER_FLAGS = ("anonymous", "unsubscribe_synced")
_SELECT_USERS = f"SELECT {', '.join(_USER_COLUMNS)} FROM users WHERE user_id IN ({{}})"


async def _load_users(raw: RawSQL, ids: set[str]) -> dict[str, dict[str, Any]]:
    sql = _SELECT_USERS if raw.sqlite else _SELECT_USERS + " FOR UPDATE"
    users: dict[str, dict[str, Any]] = {}
    for values in await raw.fetch_in(sql, ids):
        row = dict(zip(_USER_COLUMNS, values, strict=True))
        for column in _USER_TIMES:
            row[column] = raw.dt(row[column])
        for column in _USER_FLAGS:
            row[column] = bool(row[column])
        users[row["user_id"]] = row
    return users


def _touches_memberships(m: Message) -> bool:
    """Plain activity from a known id never changes memberships: skip loading them."""
    if m.type not in ("track", "page", "screen"):
        return True
    if m.user_id and m.anonymous_id and m.user_id != m.anonymous_id:
        return True  # may fold an anonymous profile (and its accounts) into the user
    return m.type == "track" and m.event in _B2B_EVENTS


_B2B_EVENTS = frozenset({"Account Created", "Account Deleted", "Account Added User",
                         "Account Removed User"})


def _user_values(raw: RawSQL, row: dict[str, Any], columns: tuple[str, ...]) -> list[Any]:
    out: list[Any] = []
    for column in columns:
        value = row[column]
        if column in _USER_TIMES:
            value = raw.ts(value)
        elif column in _USER_FLAGS:
            value = raw.flag(bool(value))
        out.append(value)
    return out


async def _save_users(conn: AsyncConnection, book: Book) -> None:
    raw = await RawSQL.of(conn)
    gone = book.removed_users | book.erased_users
    if gone:
        await raw.execute_in("DELETE FROM users WHERE user_id IN ({})", gone)
    new = [book.users[u] for u in sorted(book.new_users) if u in book.users]
    for row in new:
        row["updated_at"] = book.now
    await raw.executemany(
        f"INSERT INTO users ({', '.join(_USER_COLUMNS)}) VALUES "
        f"({', '.join('?' * len(_USER_COLUMNS))}) ON CONFLICT DO NOTHING",
        [_user_values(raw, row, _USER_COLUMNS) for row in new])
    # Write only the columns that changed, grouped by which ones (activity is the usual set).
    groups: dict[tuple[str, ...], list[list[Any]]] = {}
    for user_id in sorted(book.dirty_users - book.new_users):
        current = book.users.get(user_id)
        if current is None:
            continue
        before = book.loaded.get(user_id, {})
        changed = tuple(c for c in _USER_COLUMNS[1:] if c != "updated_at"
                        and current[c] != before.get(c))
        if not changed:
            continue
        current["updated_at"] = book.now
        columns = (*changed, "updated_at")
        groups.setdefault(columns, []).append([*_user_values(raw, current, columns), user_id])
    for columns, rows in groups.items():
        assignments = ", ".join(f"{c} = ?" for c in columns)
        await raw.executemany(f"UPDATE users SET {assignments} WHERE user_id = ?", rows)


async def save_book(conn: AsyncConnection, book: Book) -> None:
    await _save_users(conn, book)
    await _save_aliases(conn, book)
    await _save_accounts(conn, book)
    await _save_memberships(conn, book)
    for source, target in book.merges:
        await conn.execute(sa.update(SURVEYS).where(SURVEYS.c.user_id == source)
                           .values(user_id=target))
        await conn.execute(sa.update(DECISIONS).where(DECISIONS.c.user_id == source)
                           .values(user_id=target))
        await conn.execute(sa.delete(MEMBERSHIPS).where(MEMBERSHIPS.c.user_id == source))
    if book.erased_users:
        await _erase(conn, book, sorted(book.erased_users))


async def _save_aliases(conn: AsyncConnection, book: Book) -> None:
    if book.new_aliases:
        stmt = insert(conn, ALIASES)
        stmt = stmt.on_conflict_do_update(index_elements=["alias_id"],
                                          set_={"user_id": stmt.excluded.user_id})
        await conn.execute(stmt, [{"alias_id": a, "user_id": u, "created_at": book.now}
                                  for a, u in sorted(book.new_aliases.items())])
    for source, target in book.merges:
        await conn.execute(sa.update(ALIASES).where(ALIASES.c.user_id == source)
                           .values(user_id=target))


async def _save_accounts(conn: AsyncConnection, book: Book) -> None:
    new = [book.accounts[g] for g in sorted(book.new_accounts)]
    for row in new:
        row["updated_at"] = book.now
    if new:
        await conn.execute(insert(conn, ACCOUNTS).on_conflict_do_nothing(), new)
    changed = [book.accounts[g] for g in sorted(book.dirty_accounts - book.new_accounts)]
    if changed:
        for row in changed:
            row["updated_at"] = book.now
        await conn.execute(
            sa.update(ACCOUNTS).where(ACCOUNTS.c.group_id == sa.bindparam("b_group_id")).values(
                {c.name: sa.bindparam(c.name) for c in ACCOUNTS.columns if c.name != "group_id"}),
            [{**row, "b_group_id": row["group_id"]} for row in changed],
        )


async def _save_memberships(conn: AsyncConnection, book: Book) -> None:
    rows = [book.memberships[k] for k in sorted(book.new_memberships | book.dirty_memberships)
            if k in book.memberships]
    if not rows:
        return
    stmt = insert(conn, MEMBERSHIPS)
    stmt = stmt.on_conflict_do_update(
        index_elements=["user_id", "group_id"],
        set_={"active": stmt.excluded.active, "changed_at": stmt.excluded.changed_at},
    )
    await conn.execute(stmt, rows)


async def _erase(conn: AsyncConnection, book: Book, user_ids: list[str]) -> None:
    """Forget everything about these people; keep only the suppression of the id."""
    await conn.execute(insert(conn, SUPPRESSIONS).on_conflict_do_nothing(),
                       [{"user_id": u, "suppressed_at": book.now} for u in user_ids])
    await delete_in(conn, MEMBERSHIPS, MEMBERSHIPS.c.user_id, user_ids)
    await delete_in(conn, ALIASES, ALIASES.c.user_id, user_ids)
    await delete_in(conn, ALIASES, ALIASES.c.alias_id, user_ids)
    # The deletion requests themselves stay, so a redelivered one is still a duplicate.
    for part in [user_ids[i:i + 500] for i in range(0, len(user_ids), 500)]:
        for column in (EVENTS.c.user_id, EVENTS.c.anonymous_id):
            await conn.execute(sa.delete(EVENTS).where(column.in_(part), EVENTS.c.type != "delete"))
    await delete_in(conn, DECISIONS, DECISIONS.c.user_id, user_ids)
    for part in [user_ids[i:i + 500] for i in range(0, len(user_ids), 500)]:
        await conn.execute(
            sa.update(SURVEYS).where(SURVEYS.c.user_id.in_(part), SURVEYS.c.state == "pending")
            .values(state="cancelled", lease_owner=None)
        )
        await conn.execute(
            sa.update(SURVEYS).where(SURVEYS.c.user_id.in_(part))
            .values(score=None, comment=None, answered_at=None, reminder_due_at=None,
                    synced_revision=SURVEYS.c.answer_revision, needs_sync=False)
        )
