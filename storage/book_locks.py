"""The locks an intake transaction takes on the part of the customer book it reads and
writes, so several npsd processes update the book at once without a lost update.

One transaction-scoped lock per key — a user id the batch names (`u:`), an alias target it
resolves to, an account (`g:`), an email address it plans a survey for (`e:`) — rather than
SELECT ... FOR UPDATE on the rows: most keys of a batch have no row yet (a new user, a new
account, an id about to be merged), and a lock on a row that does not exist locks nothing.
Two batches that share no key run in parallel; two that share one are serialised on it,
which is what a read-modify-write of that user's counters needs.

Deadlocks: each set of keys is locked in one statement, in ascending order of its 64-bit
key, so two batches locking their keys this way never wait for each other in a cycle.
Keys learnt only after reading (alias targets, email addresses) are locked in a second
round, out of that order: the database may then report a deadlock, and the intake retries
the whole transaction (storage.intake_store, Dialect.retryable). Every writer of the book
holds the locks of what it changes (messages' ids and accounts, alias targets, erased ids),
so a row read under its key's lock stays as read until commit.

How a set is locked is the Dialect's (storage/dialect.py, keys_sql: PostgreSQL's advisory
locks over an array). On SQLite the write transaction's BEGIN IMMEDIATE already excludes
every other writer: every lock here is then a no-op, and no key is even hashed.

A writer that changes the book wholesale (an import of another tool's answers) takes
BOOK_KEY exclusively instead (Values.exclusive); every intake transaction takes it shared
first (Values.shared), so intakes run together and an import runs alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from hashlib import blake2b

from storage.fast_path import Steps, Values

BOOK_KEY = 0x6E707365  # the whole book: shared by each intake, exclusive for an import


def key(kind: str, value: str) -> int:
    """A stable signed 64-bit lock key (Python's hash() differs between processes)."""
    digest = blake2b(f"{kind}:{value}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class BookLocks:
    """The keys one intake transaction holds."""

    def __init__(self, v: Values) -> None:
        self._v = v
        self._per_key = v.locks_keys
        self.held: set[int] = set()

    def lock(self, users: Iterable[str] = (), accounts: Iterable[str] = (),
             addresses: Iterable[str] = ()) -> Steps[bool]:
        """Take the keys of these user ids, accounts and address keys not yet held, in
        ascending order; whether any was new (never, where the transaction holds it all)."""
        if not self._per_key:
            return False
        keys = ({key("u", u) for u in users} | {key("g", g) for g in accounts}
                | {key("e", a) for a in addresses})
        wanted = sorted(keys - self.held)
        if not wanted:
            return False
        yield from self._v.exclusive_keys(wanted)
        self.held.update(wanted)
        return True

    def share_book(self) -> Steps[None]:
        """Hold BOOK_KEY shared until the transaction ends (a no-op where it holds it all)."""
        yield from self._v.shared(BOOK_KEY)
