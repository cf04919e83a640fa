"""Survey dispatch: claim due surveys, check them again, hand them to the email backend.

At most once: the hand-off of a chunk is committed (storage.surveys.settle) before SMTP
starts on it. Chunks are pipelined: while one is being sent, the outcomes of the one before
and the hand-off of the next are committed in one transaction, so the SMTP connections never
wait for the database. At most MAX_IN_FLIGHT chunks are handed off and not yet recorded, so
a crash can lose at most those — recorded failed ("interrupted"), never resent."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta

import structlog

from jobs.clock import Clock
from jobs.email import EmailBackend
from jobs.email_message import (
    PermanentEmailError,
    SurveyEmail,
    TransientEmailError,
    render_message,
)
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
from storage.surveys import Claimed, Outcome

log = structlog.get_logger("npsd.survey")

LEASE = timedelta(seconds=25)  # a dead process's claims are taken over within 30 s (2 s ticks)
RENEW_EVERY = timedelta(seconds=5)  # leases of claims still waiting, renewed this often
CLAIM_BATCH = 500
HANDOFF_CHUNK = 64
MAX_IN_FLIGHT = 2  # chunks handed off and not yet recorded
SMTP_RETRY = RetryPolicy(max_attempts=8, base_s=30.0, cap_s=3600.0)


class Dispatcher:
    def __init__(self, store: Store, clock: Clock, owner: str,
                 settings: Callable[[], Settings], backend: Callable[[], EmailBackend],
                 on_email: Callable[[str], None] | None = None) -> None:
        self._store, self._clock, self._owner = store, clock, owner
        self._settings, self._backend = settings, backend
        self._lock = asyncio.Lock()
        self._on_email = on_email
        self._renewed: datetime | None = None
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
        if self._lock.locked():
            return 0
        async with self._lock:
            now = self._clock.now()
            back, lost = await self._store.release(now=now)
            for owner in await self._store.lease_owners():
                if owner != self._owner and owner_is_dead(owner):
                    dead_back, dead_lost = await self._store.release(owner)
                    back, lost = back + dead_back, lost + dead_lost
            if back or lost:
                log.warning("survey.leases_taken_over", returned=back, interrupted=lost)
            total = 0
            in_flight: deque[asyncio.Task[list[Outcome]]] = deque()
            try:
                while not self.stopping:
                    # Claimed while the last chunks are still being sent.
                    claimed = await self._store.claim_due(self._clock.now(),
                                                      self._owner, CLAIM_BATCH, LEASE)
                    if not claimed:
                        break
                    total += len(claimed)
                    settings = self._settings()
                    sendable = await self._screen(claimed, settings)
                    for start in range(0, len(sendable), HANDOFF_CHUNK):
                        if self.stopping:
                            break  # leases run out and another start picks these up
                        await self._hand_off(sendable[start:start + HANDOFF_CHUNK],
                                             settings, in_flight)
            finally:
                await self._drain(in_flight)
            return total

    async def _hand_off(self, chunk: list[Claimed], settings: Settings,
                        in_flight: deque[asyncio.Task[list[Outcome]]]) -> None:
        """Commit the chunk's hand-off (with the outcomes of the oldest chunk in flight, if
        the pipeline is full), then start sending it."""
        done = await in_flight.popleft() if len(in_flight) >= MAX_IN_FLIGHT else []
        now = self._clock.now()
        renew = self._renewed is None or not timedelta(0) <= now - self._renewed < RENEW_EVERY
        mine = await self._store.settle(done, now, owner=self._owner, lease=LEASE,
                                    handoff=[c.id for c in chunk if not c.reminder],
                                    renew=renew, interval=settings.survey.resurvey_interval)
        if renew:
            self._renewed = now
        chunk = [c for c in chunk if c.reminder or c.id in mine]
        in_flight.append(asyncio.create_task(self._send_chunk(chunk, settings)))

    async def _drain(self, in_flight: deque[asyncio.Task[list[Outcome]]]) -> None:
        """Wait for the chunks still being sent and record what became of them."""
        outcomes: list[Outcome] = []
        while in_flight:
            outcomes += await in_flight.popleft()
        if outcomes:
            await self._store.settle(outcomes, self._clock.now(), owner=self._owner,
                                 lease=LEASE)

    async def _send_chunk(self, chunk: list[Claimed], settings: Settings) -> list[Outcome]:
        now = self._clock.now()  # the Date of every email in the chunk
        failures = await asyncio.gather(*(self._send(c, settings, now) for c in chunk))
        # One time for the chunk: its sent rows then share one UPDATE.
        done = self._clock.now()
        expires, reminder = expires_at(done, settings.survey), reminder_due(done, settings.survey)
        return [failure or Outcome(c.id, c.user_id, SurveyState.SENT,
                                   "reminder sent" if c.reminder else "sent",
                                   expires_at=expires, reminder_due_at=reminder,
                                   reminder=c.reminder)
                for c, failure in zip(chunk, failures, strict=True)]

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

    async def _send(self, c: Claimed, settings: Settings, now: datetime) -> Outcome | None:
        """Email one survey; None means sent, else the outcome of the failure."""
        assert c.user is not None
        email = SurveyEmail(
            survey_id=c.id, token=c.token, to=c.user["email"], first_name=c.user["first_name"],
            name=c.user["name"], product_name=settings.survey.product_name,
            public_url=settings.server.public_url, sender=settings.email.sender,
            reminder=c.reminder, locale=c.user.get("locale"),
            default_locale=settings.survey.default_locale, texts=settings.survey.texts)
        try:
            await self._backend().send(render_message(email, now=now))
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
        return None

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
        log.info("survey.retry", survey_id=c.id, code=exc.code, delay_s=round(delay, 1))
        return Outcome(c.id, c.user_id, SurveyState.PENDING,
                       f"retry at {format_instant(due)}: the mail server said {detail}",
                       due_at=due)

    def _count(self, result: str) -> None:
        if self._on_email is not None:
            self._on_email(result)


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

