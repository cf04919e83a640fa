"""The Store: the one interface the daemon and the jobs use to reach the database.

Grouped by concern as APScheduler 4's `abc.DataStore` is: intake, outbox, customers, sync,
reads, health. Each method's docstring is its contract (what it returns when there is
nothing, what it raises, what it locks); tests/integration/test_store.py holds every
backend to it. Every method may raise `StoreUnavailable` when the database cannot be
reached or refuses the work; callers answer 503 or retry on the next run. `SqlStore`
(storage/sql_store.py) is the one implementation, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Protocol, Self

from storage.answers import SurveyView
from storage.book import BookPolicy
from storage.console_reads import Filters
from storage.console_sessions import Session
from storage.deliveries import Claimed as ClaimedDelivery
from storage.deliveries import LoopPolicy, Settled
from storage.events import Message
from storage.import_store import ImportRow, RowOutcome
from storage.states import ENDED, UNSENT, AnswerResult, Openness, SurveyState
from storage.survey_plan import Planner
from storage.surveys import Claimed, Delivered, HandedOff, Outcome
from storage.sync_store import PendingChunk

__all__ = ["ENDED", "UNSENT", "AnswerResult", "IntakePolicy", "Openness", "Store",
           "SurveyState", "SurveyView"]


@dataclass(frozen=True)
class IntakePolicy:
    """What `Store.record` applies to a batch of Segment messages, built by the daemon
    from the live settings so a SIGHUP takes effect on the next group: the customer-book
    rules, the survey planner (None: no planning), what to do once an erasure
    committed (the daemon removes the outbox files of the erased surveys), and the
    alerts and webhooks an erasure causes (`user.erased`; None: none)."""

    book: BookPolicy
    planner: Planner | None
    on_erased: Callable[[list[int]], None] | None = None
    loop: LoopPolicy | None = None


class Store(Protocol):
    """The database behind npsd. Use as `async with store:`; it owns its connections and
    its intake writer, which run from `__aenter__` to `__aexit__`."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None: ...

    # --- intake ---------------------------------------------------------------------------
    async def record(self, messages: list[Message], policy: IntakePolicy,
                     nbytes: int = 0) -> list[bool]:
        """Apply `messages` to the customer book and plan surveys, in one transaction
        grouped with other callers'. Returns one flag per message: True when new, False
        for a messageId seen within the dedup window; `[]` for no messages. Raises
        `CommitQueueFull` when too much waits already (the caller answers 429/503),
        `StoreUnavailable` when the writer is down. Takes the write lock."""
        ...

    def writer_alive(self) -> bool:
        """False once the intake writer has stopped or died (the watchdog's question)."""
        ...

    def queued(self) -> tuple[int, int]:
        """(messages, body bytes) submitted to `record` and not yet answered."""
        ...

    # --- outbox ---------------------------------------------------------------------------
    async def claim_due(self, now: datetime, owner: str, limit: int,
                        lease: timedelta) -> list[Claimed]:
        """Claim up to `limit` surveys and reminders due by `now` for `owner` until
        `now + lease` (pending → sending; skip-locked on PostgreSQL, under the write lock
        on SQLite). `[]` when none is due."""
        ...

    async def settle(self, outcomes: list[Outcome], now: datetime, *, owner: str,
                     lease: timedelta, handoff: list[int] | None = None,
                     renew: bool = True, interval: timedelta | None = None,
                     reminders: list[int] | None = None) -> set[int]:
        """One commit of the hand-off journal: record `outcomes` of `owner`'s claims and mark
        `handoff` surveys and `reminders` handed off (their SMTP transactions start next):
        returns the ids of those still ours to send (empty for none). `renew` also extends
        the lease of `owner`'s other survey claims."""
        ...

    async def record_outcomes(self, outcomes: list[Outcome], now: datetime) -> None:
        """Record outcomes decided before sending (skipped, deferred); nothing for `[]`."""
        ...

    async def release(self, owner: str | None = None, now: datetime | None = None, *,
                      delivered: Delivered | None = None) -> tuple[int, int]:
        """Give back claims: `owner`'s, or (owner None) every claim whose lease ended
        before `now`. Claims not handed off go back to pending; handed-off ones (their
        SMTP transaction had started) are recorded failed ("interrupted", never resent),
        with a decision. Reminder claims likewise: unmarked ones are free again, marked ones
        recorded "reminder failed" (interrupted). With `delivered` (file backend, `owner`
        dead): those in it are recorded sent, the other hand-offs go back to pending (or are
        free again). Returns (back, failed)."""
        ...

    async def handed_off(self, owner: str) -> HandedOff:
        """Ids of `owner`'s claims (surveys, reminders) whose hand-off was committed and not
        yet settled."""
        ...

    async def release_unsent(self, owner: str) -> int:
        """Give back `owner`'s claims not yet handed to the mail server; their count."""
        ...

    async def lease_owners(self, now: datetime | None = None) -> list[str]:
        """The owners holding survey or reminder claims now; `[]` when none."""
        ...

    async def earliest_due(self) -> datetime | None:
        """The earliest time a pending survey or a reminder is due; None when nothing."""
        ...

    async def expire(self, now: datetime) -> int:
        """Sent surveys whose response window ended by `now` become expired; how many."""
        ...

    async def existing_surveys(self, ids: set[int]) -> set[int]:
        """Which of these survey ids still exist (the others were erased)."""
        ...

    async def set_email_keys(self, rows: list[tuple[int, str | None]]) -> None:
        """Store each (survey id, email key) pair: the address a survey went to, keyed."""
        ...

    async def sent_per_account(self, group_ids: list[str], since: datetime
                               ) -> dict[str, int]:
        """Surveys sent since `since` per account (absent: none), for the account cap."""
        ...

    async def address_last_surveyed(self, keys: list[str], since: datetime
                                    ) -> dict[str, datetime]:
        """The last time since `since` each email key was surveyed (absent: never)."""
        ...

    # --- customers ------------------------------------------------------------------------
    async def survey(self, token: str) -> SurveyView | None:
        """The survey a link's token names; None for a token we never issued (malformed
        ones included, without a query)."""
        ...

    async def answer(self, token: str, score: int, comment: str | None,
                     now: datetime, loop: LoopPolicy | None = None) -> AnswerResult:
        """Record or revise the answer to the survey `token` names, if it is open at
        `now` (every revision is synced again); CLOSED when it is not, or is unknown.
        The alerts and webhooks `loop` makes of it are written in the same transaction."""
        ...

    async def unsubscribe(self, user_id: str, now: datetime,
                          loop: LoopPolicy | None = None) -> bool:
        """Unsubscribe `user_id` and cancel their pending surveys. False when they already
        were (idempotent); the webhooks `loop` makes of it are written with it."""
        ...

    async def erase(self, user_id: str, policy: IntakePolicy) -> None:
        """Delete everything npsd holds about `user_id` (and the ids aliased to them),
        through the intake writer so it is ordered with their events."""
        ...

    async def import_answers(self, rows: list[ImportRow], source: str, now: datetime, *,
                             sync: bool, write: bool = True) -> list[RowOutcome]:
        """Record `rows` of an export from `source` as answered surveys at their dates, in
        one transaction (under the book lock on PostgreSQL): a row whose `key` is stored is
        "present"; one whose user id or address key is suppressed is "suppressed"; else
        "imported", for the user named (an alias resolved), else the user holding the
        address (the one seen last), else a new email-only user. Answers are pending for
        sync-back only with `sync` (never an email-only user's). `write` false decides the
        same and writes nothing. Imported answers join the running NPS totals in the same
        transaction. One outcome per row, in order; `[]` for no rows."""
        ...

    # --- alerts and webhooks (storage/deliveries.py) ---------------------------------------
    async def claim_deliveries(self, now: datetime, owner: str, limit: int,
                               lease: timedelta) -> list[ClaimedDelivery]:
        """Lease up to `limit` due deliveries for `owner` until `now + lease` (skip-locked
        on PostgreSQL); `[]` when none is due."""
        ...

    async def settle_deliveries(self, outcomes: list[Settled], now: datetime,
                                owner: str) -> None:
        """Record how each of `owner`'s attempts ended; rows erased meanwhile are skipped."""
        ...

    async def delivery_lease_owners(self) -> list[str]:
        """Who holds delivery leases now; `[]` when nobody."""
        ...

    async def release_deliveries(self, owner: str) -> int:
        """Give back `owner`'s delivery claims (due again at once); how many."""
        ...

    async def replay_dead(self, now: datetime, since: datetime | None = None) -> int:
        """Dead letters (of events created since `since`) back to pending, due at `now`,
        with their webhook-ids; how many."""
        ...

    async def delivery_counts(self, now: datetime) -> dict[str, Any]:
        """Deliveries by state, due now, and the oldest dead letter's time."""
        ...

    async def prune_deliveries(self, before: datetime) -> int:
        """Forget delivered and dropped deliveries finished before `before`; how many."""
        ...

    # --- sync -----------------------------------------------------------------------------
    async def acquire_sync_lease(self, owner: str, now: datetime, lease: timedelta) -> bool:
        """Take the one sync lease if free or expired; False when another holds it."""
        ...

    async def renew_sync_lease(self, owner: str, now: datetime, lease: timedelta) -> bool:
        """Extend `owner`'s lease; False when it is no longer theirs."""
        ...

    async def sync_lease_holder(self) -> str | None:
        """Who holds the sync lease; None when nobody."""
        ...

    async def break_sync_lease(self, dead_holder: str) -> None:
        """Free the lease if `dead_holder` (a dead process) still holds it."""
        ...

    async def release_sync_lease(self, owner: str, now: datetime, result: str, sent: int,
                                 failed: int) -> None:
        """Free `owner`'s lease and record how the run ended."""
        ...

    async def last_sync(self) -> tuple[datetime | None, datetime | None]:
        """(last started, last succeeded); None for never."""
        ...

    async def pending_chunk(self, limit: int, after_id: int, *,
                            with_accounts: bool) -> PendingChunk:
        """Up to `limit` answers to sync with ids above `after_id`, in id order; an empty
        chunk when none is left."""
        ...

    async def checkpoint(self, revisions: list[tuple[int, int]],
                         failures: list[dict[str, Any]], now: datetime,
                         renew: tuple[str, timedelta] | None = None) -> None:
        """Mark the (survey id, revision) pairs Segment settled as synced (a newer
        revision stays pending), record the rejected ones, optionally renew the lease."""
        ...

    async def pending_unsubscribes(self, limit: int) -> list[tuple[str, datetime]]:
        """Unsubscribes not yet synced, oldest first; `[]` when none."""
        ...

    async def mark_unsubscribes_synced(self, user_ids: list[str]) -> None: ...

    # --- reads ----------------------------------------------------------------------------
    async def user(self, some_id: str) -> dict[str, Any] | None:
        """The user a userId or an aliased id names, with surveys and accounts; None when
        unknown."""
        ...

    async def user_exists(self, some_id: str) -> bool:
        """Whether a userId or an aliased id names a user."""
        ...

    async def account(self, group_id: str) -> dict[str, Any] | None:
        """An account with its members and NPS figures; None when unknown."""
        ...

    async def account_figures(self, group_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The NPS figures of each account named (zero counts for one without answers)."""
        ...

    async def nps(self, by: str | None = None) -> dict[str, Any]:
        """The NPS summary, or per account/month (`by`); zero counts when nothing."""
        ...

    async def decisions(self, some_id: str) -> list[dict[str, Any]] | None:
        """Why each survey was planned, skipped, sent; None for an unknown user."""
        ...

    async def status(self, now: datetime) -> dict[str, Any]:
        """Counts by survey state, what is due, the last sync: the admin status."""
        ...

    # --- console (storage/console_store.py) ------------------------------------------------
    async def dashboard(self, now: datetime, by: str = "week") -> dict[str, Any]:
        """NPS figures `overall`, `last_90_days` and `last_30_days` (answers by answer day,
        `sent` by send day, UTC days; a window starts at the day boundary `now` - 30/90
        days) and `trend`: per week (Monday) or per month (`by`) of answers, oldest first;
        `overall` equals `nps()`. Zero counts and an empty trend when nothing. Read from the
        running totals: cost independent of the number of answers."""
        ...

    async def responses(self, filters: Filters, limit: int = 50, cursor: str | None = None
                        ) -> tuple[list[dict[str, Any]], str | None]:
        """Answers matching `filters`, newest first (answered_at, then id), at most `limit`
        after `cursor`, each with its user's email, name and accounts; and the cursor of
        the next page (None on the last). `([], None)` when nothing matches. Raises
        `BadCursor` for a cursor this store did not hand out."""
        ...

    async def account_names(self, group_ids: list[str]) -> dict[str, str | None]:
        """The stored `name` trait of each known account named (None: no name); unknown
        accounts are absent."""
        ...

    async def accounts_page(self, sort: str = "name", descending: bool = False,
                            limit: int = 100, offset: int = 0
                            ) -> tuple[list[dict[str, Any]], int]:
        """A page of the accounts not deleted, with name, members, NPS and latest answer,
        ordered by `sort` (one of name, members, nps, responses, last_answer; ties by
        groupId), and how many accounts there are. `([], 0)` for none; ValueError for
        another `sort`."""
        ...

    async def account_members(self, group_id: str, limit: int = 200) -> list[dict[str, Any]]:
        """Up to `limit` active members of the account, by user id; `[]` when none."""
        ...

    async def search_users(self, q: str, limit: int = 50) -> list[dict[str, Any]]:
        """Known (not anonymous) users whose id is `q`, or whose email or name starts with
        it (case-insensitive on the first letter of a name), by user id; `[]` for a blank
        `q` or no match. Prefix only: see the README's console section."""
        ...

    async def send_queue(self, now: datetime, days: int = 7, limit: int = 200
                         ) -> dict[str, Any]:
        """Pending surveys due before `now` + `days` (soonest first, `limit` of them, with
        `total_due` and the reason each was scheduled) and the latest `limit` skips with
        their reasons; empty lists when none."""
        ...

    async def create_session(self, session_id: str, token_hash: str, csrf: str,
                             now: datetime, expires_at: datetime) -> None:
        """Store a console session (only the SHA-256 of `session_id`) and delete the ones
        expired by `now`."""
        ...

    async def find_session(self, session_id: str, now: datetime) -> Session | None:
        """The live session of this cookie id; None when unknown, deleted or expired."""
        ...

    async def delete_session(self, session_id: str) -> None:
        """End the session (logout); nothing for an unknown one."""
        ...

    # --- health ---------------------------------------------------------------------------
    async def ping(self, timeout_s: float) -> bool:
        """True when the database answers a trivial query within `timeout_s`."""
        ...

    async def schema_version(self) -> int | None:
        """The schema version of the database; None for an empty one."""
        ...

    async def prune(self, before: datetime, slice_size: int) -> int:
        """Forget messageIds received before `before`, `slice_size` at a time so the
        intake writer never waits long behind one big delete; how many."""
        ...
