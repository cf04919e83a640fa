"""The SQLite intake writer keeps the user rows it committed (storage/user_cache.py): what
the store answers must be the same as if it read every row again, whatever else writes."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import AsyncIterator, Generator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import storage.book_io
import storage.user_cache
from jobs.book_rules import BookRules
from jobs.clock import MovableClock
from jobs.planning import make_planner
from settings import SurveySettings
from storage.db import StoreUnavailable
from storage.events import Message
from storage.fast_path import Fetch, Steps
from storage.sql_store import SqlStore
from storage.sqlite_writer import run_transaction
from storage.store import IntakePolicy
from storage.user_cache import UserRowCache

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
POLICY = IntakePolicy(BookRules(), make_planner(SurveySettings()))
_counter = iter(range(1_000_000))


def track(user_id: str) -> Message:
    return Message(message_id=f"t-{next(_counter)}", type="track", user_id=user_id,
                   anonymous_id=None, timestamp=NOW + timedelta(seconds=next(_counter)),
                   event="Clicked")


def identify(user_id: str, **traits: Any) -> Message:
    return Message(message_id=f"i-{next(_counter)}", type="identify", user_id=user_id,
                   anonymous_id=None, timestamp=NOW, traits=traits)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "npsd.db"


@pytest.fixture
async def store(path: Path) -> AsyncIterator[SqlStore]:
    async with SqlStore(f"sqlite+aiosqlite:///{path}", MovableClock(NOW)) as opened:
        yield opened


async def count(store: SqlStore, user_id: str) -> int:
    user = await store.user(user_id)
    assert user is not None
    return int(user["activity"]["events"])


async def test_a_change_another_connection_commits_is_not_undone(
        store: SqlStore, path: Path) -> None:
    await store.record([identify("u1", email="u1@example.com", plan="free")], POLICY)
    await store.record([track("u1")], POLICY)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("UPDATE users SET event_count = 100, first_name = 'Ann' WHERE user_id = 'u1'")
    other.close()
    await store.record([track("u1"), identify("u1", plan="pro")], POLICY)
    user = await store.user("u1")
    assert user is not None
    assert (user["activity"]["events"], user["firstName"], user["traits"]["plan"]) == (
        101, "Ann", "pro")


async def test_a_write_on_the_writers_own_connection_is_not_undone(store: SqlStore) -> None:
    await store.record([track("u1")], POLICY)
    await store.record([track("u1")], POLICY)  # read back, now kept

    def work(conn: sqlite3.Connection) -> bool:
        conn.execute("UPDATE users SET event_count = 50 WHERE user_id = 'u1'")
        return True

    await store.db.in_writer_thread(work)
    await store.record([track("u1")], POLICY)
    assert await count(store, "u1") == 51


async def test_an_erased_user_stays_erased_when_their_events_keep_coming(
        store: SqlStore) -> None:
    await store.record([identify("u1", email="u1@example.com", plan="pro"), track("u2")],
                       POLICY)
    await store.record([track("u1"), track("u2")], POLICY)
    await store.erase("u1", POLICY)
    await store.record([track("u1"), identify("u1", plan="free"), track("u2")], POLICY)
    assert await store.user("u1") is None and not await store.user_exists("u1")
    assert await count(store, "u2") == 3


async def test_a_group_that_failed_leaves_nothing_of_itself_behind(
        store: SqlStore, monkeypatch: pytest.MonkeyPatch) -> None:
    await store.record([track("u1")], POLICY)
    save_aliases = storage.book_io._save_aliases
    calls = 0

    def failing_once(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:  # after the book has counted the event in memory
            raise sqlite3.OperationalError("disk I/O error")
        return save_aliases(*args)

    monkeypatch.setattr(storage.book_io, "_save_aliases", failing_once)
    with pytest.raises(StoreUnavailable):
        await store.record([track("u1")], POLICY)
    await store.record([track("u1")], POLICY)
    assert await count(store, "u1") == 2


# --- the same book with and without it ---------------------------------------------------

def _messages(rng: random.Random, sent: list[str]) -> list[Message]:
    """A few messages of every kind the book knows, over a few users and visitors, now and
    then one sent again."""
    out: list[Message] = []
    for _ in range(rng.randrange(1, 6)):
        user = rng.choice(["u1", "u2", "u3", "u4", "u5"])
        visitor = rng.choice([None, None, "a1", "a2", "a3"])
        at = NOW + timedelta(minutes=rng.randrange(5_000))
        kind = rng.choice(["track"] * 10 + ["identify"] * 6 + ["page"] * 2 + ["alias", "delete"])
        if kind == "delete":
            user, visitor = rng.choice(["u4", "u5"]), None  # erased for good: not the others
        mid = rng.choice(sent) if sent and rng.random() < 0.1 else f"d-{len(sent)}"
        sent.append(mid)
        if kind == "identify":
            traits: dict[str, Any] = {"email": f"{user}@example.com",
                                      "plan": rng.choice(["free", "pro"])}
            if rng.random() < 0.3:
                traits["groupId"] = rng.choice(["g1", "g2"])
            out.append(Message(mid, kind, user, visitor, at, traits=traits,
                               context_timezone=rng.choice([None, "Europe/Paris"])))
        elif kind == "alias":
            out.append(Message(mid, kind, user, None, at, previous_id=f"v{len(sent)}"))
        else:
            out.append(Message(mid, kind, None if kind != "delete" and visitor and
                               rng.random() < 0.5 else user, visitor, at,
                               event="Clicked" if kind == "track" else None,
                               name="Home" if kind == "page" else None))
    return out


async def _write_elsewhere(rng: random.Random, store: SqlStore, path: Path) -> None:
    """What the rest of npsd (or an operator) may write between two intake groups."""
    user = rng.choice(["u1", "u2", "u3", "a1"])
    choice = rng.randrange(4)
    if choice == 0:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("UPDATE users SET event_count = event_count + 7, first_name = 'X' "
                      "WHERE user_id = ?", (user,))
        other.close()
    elif choice == 1:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("DELETE FROM users WHERE user_id = ?", (user,))
        other.close()
    elif choice == 2:
        await store.unsubscribe(user, NOW)
    else:
        def work(conn: sqlite3.Connection) -> bool:
            conn.execute("UPDATE users SET session_count = session_count + 3 "
                         "WHERE user_id = ?", (user,))
            return True

        await store.db.in_writer_thread(work)


def _book(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    conn = sqlite3.connect(path)
    try:
        columns = [r[1] for r in conn.execute("PRAGMA table_info(users)") if r[1] != "updated_at"]
        return {
            "users": conn.execute(f"SELECT {', '.join(columns)} FROM users "
                                  "ORDER BY user_id").fetchall(),
            "aliases": conn.execute("SELECT alias_id, user_id FROM aliases "
                                    "ORDER BY alias_id").fetchall(),
            "suppressions": conn.execute("SELECT user_id FROM suppressions "
                                         "ORDER BY user_id").fetchall(),
            "memberships": conn.execute("SELECT user_id, group_id, active, changed_at "
                                        "FROM memberships ORDER BY 1, 2").fetchall(),
        }
    finally:
        conn.close()


@pytest.mark.parametrize("capacity", [3, 20_000])
@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_the_book_is_the_same_as_without_the_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capacity: int, seed: int) -> None:
    paths = [tmp_path / "cached.db", tmp_path / "uncached.db"]
    stores = []
    for path, size in zip(paths, (capacity, 0), strict=True):
        monkeypatch.setattr(storage.user_cache, "CAPACITY", size)
        stores.append(await SqlStore(f"sqlite+aiosqlite:///{path}",
                                     MovableClock(NOW)).__aenter__())
    try:
        rng = random.Random(seed)
        sent: list[str] = []
        for _ in range(150):
            if rng.random() < 0.2:
                state = rng.getstate()
                for store, path in zip(stores, paths, strict=True):
                    rng.setstate(state)
                    await _write_elsewhere(rng, store, path)
            else:
                group = _messages(rng, sent)
                for store in stores:
                    await store.record(group, POLICY)
        cached, uncached = _book(paths[0]), _book(paths[1])
        assert cached == uncached
        assert len(cached["users"]) >= 2  # the sequence did build a book
    finally:
        for store in stores:
            await store.__aexit__(None, None, None)


# --- the cache itself, on a plain connection --------------------------------------------

def _transaction(cache: UserRowCache, ids: set[str], found: dict[str, set[str]],
                 forget: bool) -> Steps[None]:
    """Take `ids`, note which were cached, keep them all, as an intake transaction does."""
    yield from cache.begin()
    rows, missing = cache.take(ids)
    found["cached"], found["missing"] = set(rows), missing
    yield Fetch("UPDATE users SET event_count = event_count + 1 WHERE user_id IN "
                f"({','.join('?' * len(ids))})", sorted(ids))
    cache.keep([*rows.values(), *({"user_id": u} for u in missing)])
    if forget:
        cache.forget_all()
    yield from cache.end()


def _run(conn: sqlite3.Connection, cache: UserRowCache, ids: set[str],
         forget: bool = False) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    cache.bind(conn)
    run_transaction(conn, _transaction(cache, ids, found, forget))
    cache.committed()
    return found


@pytest.fixture
def conn(path: Path) -> Generator[sqlite3.Connection, None, None]:
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("CREATE TABLE users (user_id TEXT PRIMARY KEY, event_count INTEGER)")
    c.executemany("INSERT INTO users VALUES (?, 0)", [("a",), ("b",), ("c",)])
    yield c
    c.close()


def test_rows_kept_are_handed_out_next_time_and_the_oldest_go_first(
        conn: sqlite3.Connection) -> None:
    cache = UserRowCache(capacity=2)
    assert _run(conn, cache, {"a"})["missing"] == {"a"}
    assert _run(conn, cache, {"b"})["missing"] == {"b"}
    assert _run(conn, cache, {"a"})["cached"] == {"a"}  # now b is the one written longest ago
    _run(conn, cache, {"c"})
    assert _run(conn, cache, {"a", "b", "c"}) == {"cached": {"a", "c"}, "missing": {"b"}}


def test_any_other_write_empties_it(conn: sqlite3.Connection, path: Path) -> None:
    cache = UserRowCache()
    _run(conn, cache, {"a"})
    conn.execute("UPDATE users SET event_count = 9")  # this connection, outside the cache
    assert _run(conn, cache, {"a"})["cached"] == set()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("UPDATE users SET event_count = 9")
    other.close()
    assert _run(conn, cache, {"a"})["cached"] == set()
    assert _run(conn, cache, {"a"})["cached"] == {"a"}  # nothing else wrote since


def test_a_read_elsewhere_or_another_connection_bound_is_told_apart(
        conn: sqlite3.Connection, path: Path) -> None:
    cache = UserRowCache()
    _run(conn, cache, {"a"})
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("SELECT count(*) FROM users").fetchone()
    reader.close()
    assert _run(conn, cache, {"a"})["cached"] == {"a"}  # reads change nothing
    fresh = sqlite3.connect(path, isolation_level=None)
    assert _run(fresh, cache, {"a"})["cached"] == set()
    fresh.close()


def test_forget_all_and_discard_empty_it(conn: sqlite3.Connection) -> None:
    cache = UserRowCache()
    _run(conn, cache, {"a", "b"})
    _run(conn, cache, {"a"}, forget=True)  # as a transaction that erased someone does
    assert len(cache) == 0
    _run(conn, cache, {"a"})
    cache.discard()  # as after a transaction that failed
    assert _run(conn, cache, {"a"})["cached"] == set()
