"""Survey dispatch: claim due surveys, check them again, hand them to the email backend.

At most once, and only as wide as SMTP itself leaves it: claims are leased, and a survey
counts as handed off only from the moment its own SMTP transaction starts. The hand-off
journal (jobs.handoff) commits that mark before the message's DATA, grouped with the marks
of the other connections and the outcomes of the messages before them, so a crash leaves at
most one survey per SMTP connection uncertain (recorded failed "interrupted", never resent);
the rest of a dead process's claims go back to the queue. While one batch is sent, the next
is claimed and screened, so the connections rarely wait for the database."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import structlog

from jobs import outbox
from jobs.clock import Clock
from jobs.email import EmailBackend
from jobs.email_message import (
    HandoffRefused,
    PermanentEmailError,
    SurveyEmail,
    TransientEmailError,
    render_message,
)
from jobs.handoff import HandoffJournal
from jobs.owners import owner_is_dead
from jobs.redact import redact
from jobs.rules import (
    expires_at,
    format_instant,
    reminder_due,
)
from jobs.segment_client import RetryPolicy, backoff_s
from jobs.send_checks import check_at_send
from settings import Settings
from settings.durations import format_duration
from storage.states import SurveyState
from storage.store import Store
from storage.survey_plan import email_key
from storage.surveys import Claimed, Delivered, Outcome

log = structlog.get_logger("npsd.survey")

LEASE = timedelta(seconds=25)  # a dead process's claims are taken over within 30 s (2 s ticks)
RENEW_EVERY = timedelta(seconds=5)  # leases of claims still waiting, renewed this often
TAKE_BACK_EVERY = timedelta(seconds=2)  # during a long run, dead processes' claims too
CLAIM_BATCH = 500
SMTP_RETRY = RetryPolicy(max_attempts=8, base_s=30.0, cap_s=3600.0)


class Dispatcher:
    def __init__(self, store: Store, clock: Clock, owner: str,
                 settings: Callable[[], Settings], backend: Callable[[], EmailBackend],
                 on_email: Callable[[str], None] | None = None) -> None:
        self._store, self._clock, self._owner = store, clock, owner
        self._settings, self._backend = settings, backend
        self._lock = asyncio.Lock()
        self._on_email = on_email
        self._taken_back: datetime | None = None
        self.stopping = False

    async def idle(self) -> None:
        """Wait until no dispatch run is in flight."""
        async with self._lock:
            return

    async def release_claims(self) -> int:
        """After the last run: hand back what was claimed but never handed off."""
        async with self._lock:
            return await self._store.release_unsent(self._owner)

    async def run_once(self) -> int:
        """Send everything that is due now; returns how many surveys were handled."""
        if self._lock.locked() or self.stopping:
            return 0
        async with self._lock:
            settings = self._settings()
            await self._take_back(settings)
            # One connection per hand-off in flight: the bound on what a crash leaves open
            # (the file backend writes as many files at once).
            limit = max(1, settings.email.smtp.max_connections)
            total = 0
            async with HandoffJournal(self._store, self._clock, self._owner, lease=LEASE,
                                      renew_every=RENEW_EVERY, limit=limit,
                                      interval=settings.survey.resurvey_interval) as journal:
                batch = await self._next_batch(settings)
                while batch is not None:
                    total += batch[0]
                    sending = asyncio.create_task(
                        self._send_all(batch[1], settings, journal, 2 * limit))
                    try:
                        # Claimed while this batch is being sent.
                        batch = None
                        if not self.stopping:
                            await self._take_back(settings, only_if_due=True)
                            batch = await self._next_batch(settings)
                    finally:
                        await sending
            return total

    async def _take_back(self, settings: Settings, only_if_due: bool = False) -> None:
        """Take back the claims of dead processes (first: with the file backend their
        outbox says what was written) and of expired leases."""
        now = self._clock.now()
        last = self._taken_back
        if only_if_due and last is not None and timedelta(0) <= now - last < TAKE_BACK_EVERY:
            return
        self._taken_back = now
        back = lost = 0
        for owner in await self._store.lease_owners():
            if owner != self._owner and owner_is_dead(owner):
                delivered = await self._delivered(owner, settings, now)
                dead_back, dead_lost = await self._store.release(owner, now,
                                                                 delivered=delivered)
                back, lost = back + dead_back, lost + dead_lost
        expired_back, expired_lost = await self._store.release(now=now)
        back, lost = back + expired_back, lost + expired_lost
        if back or lost:
            log.warning("survey.leases_taken_over", returned=back, interrupted=lost)

    async def _delivered(self, owner: str, settings: Settings,
                         now: datetime) -> Delivered | None:
        """File backend: which of a dead owner's hand-offs have their .eml written (the
        others were not delivered at all and can be sent again: exactly once)."""
        if settings.email.backend != "file":
            return None
        handed = await self._store.handed_off(owner)
        written, reminders = await asyncio.to_thread(
            outbox.emails_written, settings.email.file_dir, handed.surveys, handed.reminders)
        done = _next_second(now)
        return Delivered(frozenset(written), expires_at(done, settings.survey),
                         reminder_due(done, settings.survey), frozenset(reminders))

    async def _next_batch(self, settings: Settings) -> tuple[int, list[Claimed]] | None:
        """Claim and screen the next batch: (how many claimed, the ones to send)."""
        claimed = await self._store.claim_due(self._clock.now(), self._owner, CLAIM_BATCH,
                                              LEASE)
        if not claimed:
            return None
        return len(claimed), await self._screen(claimed, settings)

    async def _send_all(self, claims: list[Claimed], settings: Settings,
                        journal: HandoffJournal, workers: int) -> None:
        """Send a batch with a few workers: each renders its next message while another
        one's is on the wire, and no more are rendered ahead than can be sent soon."""
        queue = deque(claims)

        async def worker() -> None:
            while queue and not self.stopping:
                await self._send(queue.popleft(), settings, journal)

        await asyncio.gather(*(worker() for _ in range(min(workers, len(claims)))))

    async def _send(self, c: Claimed, settings: Settings, journal: HandoffJournal) -> None:
        """Email one survey (or reminder) and queue its outcome in the journal."""
        handed_off = False

        async def handoff() -> bool:
            nonlocal handed_off
            if self.stopping:
                return False  # left claimed: released at stop, or by its lease
            handed_off = await journal.mark(c.id, reminder=c.reminder)
            return handed_off

        outcome = await self._deliver(c, settings, handoff)
        # Queued before anything else runs on this connection (no await in between).
        if outcome is not None:
            journal.record(outcome, handed_off=handed_off)

    async def _screen(self, claimed: list[Claimed], settings: Settings) -> list[Claimed]:
        """Record the claims that are not to be sent now; returns the rest."""
        now = self._clock.now()
        skipped: list[Outcome] = []
        sendable: list[Claimed] = []
        caps = await self._account_counts(claimed, settings, now)
        by_address = _AddressCheck(settings, now)
        await by_address.load(self._store, claimed)
        for c in claimed:
            outcome = check_at_send(c, settings.survey, now, caps) or by_address.check(c)
            if outcome is None:
                sendable.append(c)
            else:
                skipped.append(outcome)
        await self._store.set_email_keys(by_address.changed)
        await self._store.record_outcomes(skipped, now)
        for o in skipped:
            log.info("survey.deferred" if o.state == SurveyState.PENDING else "survey.skipped",
                     survey_id=o.survey_id, reason=o.reason)
        return sendable

    async def _account_counts(self, claimed: list[Claimed], settings: Settings,
                              now: datetime) -> dict[str, int]:
        if settings.survey.max_per_account <= 0:
            return {}
        groups = sorted({g for c in claimed if not c.reminder for g in c.accounts})
        since = now - settings.survey.resurvey_interval
        return await self._store.sent_per_account(groups, since) if groups else {}

    async def _deliver(self, c: Claimed, settings: Settings,
                       handoff: Callable[[], Awaitable[bool]] | None) -> Outcome | None:
        """Email one survey; its outcome, or None when its hand-off was refused."""
        assert c.user is not None
        email = SurveyEmail(
            survey_id=c.id, token=c.token, to=c.user["email"], first_name=c.user["first_name"],
            name=c.user["name"], product_name=settings.survey.product_name,
            public_url=settings.server.public_url, sender=settings.email.sender,
            reminder=c.reminder, locale=c.user.get("locale"),
            default_locale=settings.survey.default_locale, texts=settings.survey.texts)
        try:
            await self._backend().send(render_message(email, now=self._clock.now()),
                                       handoff=handoff)
        except HandoffRefused:
            return None
        except TransientEmailError as exc:
            return self._retry(c, exc)
        except PermanentEmailError as exc:
            self._count("failed")
            reply = redact(exc.reply[:300])  # "550 <address>: no such user" names the person
            log.warning("survey.failed", survey_id=c.id, code=exc.code, reason=reply[:200])
            return Outcome(c.id, c.user_id, SurveyState.FAILED,
                           f"failed: the mail server refused it ({exc.code} {reply})",
                           reminder=c.reminder)
        except Exception as exc:
            self._count("failed")
            log.exception("survey.failed", survey_id=c.id, error=exc.__class__.__name__)
            return Outcome(c.id, c.user_id, SurveyState.FAILED,
                           f"failed: {exc.__class__.__name__}", reminder=c.reminder)
        self._count("sent")
        log.info("survey.sent", survey_id=c.id, reminder=c.reminder)
        # Up to the next second: the surveys sent within one share one UPDATE (storage.
        # journal), and the response window is never shorter than configured.
        done = _next_second(self._clock.now())
        return Outcome(c.id, c.user_id, SurveyState.SENT,
                       "reminder sent" if c.reminder else "sent",
                       expires_at=expires_at(done, settings.survey),
                       reminder_due_at=reminder_due(done, settings.survey), reminder=c.reminder)

    def _retry(self, c: Claimed, exc: TransientEmailError) -> Outcome:
        detail = redact(f"{exc.code or ''} {exc.reply[:200]}".strip())
        if c.reminder or c.attempts + 1 >= SMTP_RETRY.max_attempts:
            self._count("failed")
            log.warning("survey.failed", survey_id=c.id, code=exc.code, reason=detail)
            return Outcome(c.id, c.user_id, SurveyState.FAILED,
                           f"failed after {c.attempts + 1} attempts: {detail}",
                           reminder=c.reminder)
        delay = max(1.0, backoff_s(c.attempts, SMTP_RETRY))
        due = self._clock.now() + timedelta(seconds=delay)
        self._count("retry")
        log.info("survey.retry", survey_id=c.id, code=exc.code, delay_s=round(delay, 1),
                 reason=detail[:200])
        # A reply code means the server answered; without one npsd could not reach it (or,
        # file backend, not write the file): the text says which.
        said = f"the mail server said {detail}" if exc.code else detail
        return Outcome(c.id, c.user_id, SurveyState.PENDING,
                       f"retry at {format_instant(due)}: {said}", due_at=due)

    def _count(self, result: str) -> None:
        if self._on_email is not None:
            self._on_email(result)


def _next_second(t: datetime) -> datetime:
    whole = t.replace(microsecond=0)
    return whole if whole == t else whole + timedelta(seconds=1)


class _AddressCheck:
    """One survey per address per re-survey interval, again at the moment of sending (the
    address may have changed since planning, or another user id may carry it): a claim whose
    address was surveyed within the interval, or that shares it with an earlier claim of
    this batch, waits for the interval's end."""

    def __init__(self, settings: Settings, now: datetime) -> None:
        self._interval, self._now = settings.survey.resurvey_interval, now
        self._last: dict[str, datetime] = {}
        self._taken: set[str] = set()
        self.changed: list[tuple[int, str | None]] = []  # (survey, key) to store

    async def load(self, store: Store, claimed: list[Claimed]) -> None:
        keys = [k for c in claimed if not c.reminder and c.user is not None
                if (k := email_key(c.user.get("email"))) is not None]
        if keys:
            self._last = await store.address_last_surveyed(keys,
                                                             self._now - self._interval)

    def check(self, c: Claimed) -> Outcome | None:
        if c.reminder or c.user is None:
            return None
        key = email_key(c.user.get("email"))
        if key != c.email_key:
            self.changed.append((c.id, key))
        if key is None:
            return None
        last = self._now if key in self._taken else self._last.get(key)
        if last is None:
            self._taken.add(key)
            return None
        due = last + self._interval
        return Outcome(c.id, c.user_id, SurveyState.PENDING,
                       f"deferred to {format_instant(due)}: this address was surveyed on "
                       f"{format_instant(last)} under another user id (one survey per "
                       f"address per {format_duration(self._interval)})", due_at=due)

