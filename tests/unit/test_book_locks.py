"""The intake's per-key locks (storage/book_locks.py) as the Dialect expresses them: on
PostgreSQL each set of keys in one statement, ascending, never twice; on SQLite no
statement at all; and only a lost race (deadlock, serialization failure) is run again."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

from storage.book_locks import BOOK_KEY, BookLocks, key
from storage.db import StoreUnavailable
from storage.dialect import POSTGRESQL, SQLITE
from storage.fast_path import Fetch, Steps, Values


def _steps(plan: Steps[Any]) -> tuple[list[Fetch], bool]:
    sent: list[Fetch] = []
    try:
        step = next(plan)
        while True:
            assert isinstance(step, Fetch)
            sent.append(step)
            step = plan.send([(1,)])
    except StopIteration as done:
        return sent, bool(done.value)


def test_postgresql_locks_each_set_once_in_ascending_order() -> None:
    locks = BookLocks(Values(POSTGRESQL))
    sent, new = _steps(locks.lock(users=["u2", "u1"], accounts=["g1"]))
    wanted = sorted({key("u", "u1"), key("u", "u2"), key("g", "g1")})
    assert new and [s.params for s in sent] == [[wanted]]
    assert "pg_advisory_xact_lock" in sent[0].sql
    assert _steps(locks.lock(users=["u1"], accounts=["g1"])) == ([], False)  # held
    sent, new = _steps(locks.lock(users=["u1", "u3"], addresses=["a@x.io"]))
    assert new and [s.params for s in sent] == [[sorted({key("u", "u3"),
                                                         key("e", "a@x.io")})]]


def _unread() -> Iterator[str]:
    raise AssertionError("the ids were read: a key was computed")
    yield "u1"


def test_sqlite_takes_no_lock_and_hashes_no_key() -> None:
    locks = BookLocks(Values(SQLITE))
    assert _steps(locks.lock(users=_unread(), addresses=_unread())) == ([], False)
    assert _steps(locks.lock(users=["u1"])) == ([], False)


def test_the_book_key_is_shared_on_postgresql_only() -> None:
    sent, _ = _steps(BookLocks(Values(POSTGRESQL)).share_book())
    assert [(s.sql, s.params) for s in sent] == [
        ("SELECT pg_advisory_xact_lock_shared(?)", [BOOK_KEY])]
    assert _steps(BookLocks(Values(SQLITE)).share_book()) == ([], False)


def test_keys_are_stable_and_kinds_do_not_collide() -> None:
    assert key("u", "x") == key("u", "x") != key("g", "x")
    assert -(2**63) <= key("e", "x") < 2**63


@pytest.mark.parametrize(("error", "again"), [
    (asyncpg.exceptions.DeadlockDetectedError("deadlock detected"), True),
    (asyncpg.exceptions.SerializationError("could not serialize"), True),
    (asyncpg.exceptions.UniqueViolationError("duplicate key"), False),
    (RuntimeError("not a database error"), False),
])
def test_only_a_lost_race_is_run_again(error: Exception, again: bool) -> None:
    try:
        try:
            raise error
        except Exception as exc:
            raise StoreUnavailable("wrapped") from exc
    except StoreUnavailable as wrapped:
        assert POSTGRESQL.retryable(wrapped) is again
        assert SQLITE.retryable(wrapped) is False
