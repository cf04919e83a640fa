"""Delivering the outbox (storage/deliveries.py): webhooks, Slack alerts and alert emails.

The scheduler runs `Deliverer.run_once` every second: it claims due rows (leased, so two
processes never send one row at once), makes one attempt each — at most `CONCURRENCY` at a
time, each bounded by `webhooks.timeout` — and settles them in one transaction: delivered;
retried on the schedule of jobs/loop_rules.DELIVERY_RETRY (408, 429, 5xx, no answer);
dead-lettered at once for a final answer (another 4xx, a redirect, a refused email) or
when the schedule's 24 hours are over; dropped when its receiver left the config.

At least once: a process killed between a receiver's 2xx and the settle sends that row
again after the restart, with the same webhook-id (receivers deduplicate on it). Redirects
are never followed: an answer 3xx is a dead letter saying so. Neither the secret nor the
body, nor a receiver's answer, is logged; receivers are named by host only (the path of a
Slack URL is its credential).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from datetime import timedelta
from urllib.parse import urlsplit

import aiohttp
import structlog

from jobs.alerts import Alert, alert_email, slack_body
from jobs.clock import Clock
from jobs.email import EmailBackend
from jobs.email_message import EmailError, PermanentEmailError
from jobs.loop_events import EMAIL, WEBHOOK, receiver
from jobs.loop_rules import DELIVERY_RETRY, RetrySchedule, next_attempt, verdict
from jobs.owners import owner_is_dead
from jobs.redact import redact
from jobs.segment_client import parse_retry_after
from jobs.webhook_signing import headers
from settings import Settings
from storage.deliveries import DEAD, DELIVERED, DROPPED, PENDING, Claimed, Settled
from storage.store import Store

log = structlog.get_logger("npsd.deliveries")

CLAIM_BATCH = 100
CONCURRENCY = 8
USER_AGENT = "npsd (Standard Webhooks)"
_Answer = tuple[int | None, str | None, timedelta | None]  # status, error, Retry-After


class Deliverer:
    def __init__(self, store: Store, clock: Clock, owner: str,
                 settings: Callable[[], Settings], backend: Callable[[], EmailBackend],
                 session: aiohttp.ClientSession,
                 on_result: Callable[[str, str], None] | None = None,
                 schedule: RetrySchedule = DELIVERY_RETRY,
                 rand: Callable[[], float] = random.random) -> None:
        self._store, self._clock, self._owner = store, clock, owner
        self._settings, self._backend, self._session = settings, backend, session
        self._on_result, self._schedule, self._rand = on_result, schedule, rand
        self._lock = asyncio.Lock()
        self._slots = asyncio.Semaphore(CONCURRENCY)
        self.stopping = False

    def lease(self) -> timedelta:
        """Longer than a batch can take: CLAIM_BATCH / CONCURRENCY rounds of one timeout."""
        rounds = -(-CLAIM_BATCH // CONCURRENCY)
        return self._settings().webhooks.timeout * rounds + timedelta(seconds=30)

    async def idle(self) -> None:
        """Wait until no run is in flight."""
        async with self._lock:
            return

    async def take_over_dead(self) -> int:
        """Claims of a process on this host that died are due again at once."""
        taken = 0
        for owner in await self._store.delivery_lease_owners():
            if owner != self._owner and owner_is_dead(owner):
                taken += await self._store.release_deliveries(owner)
        if taken:
            log.info("delivery.leases_taken_over", deliveries=taken)
        return taken

    async def release_claims(self) -> int:
        async with self._lock:
            return await self._store.release_deliveries(self._owner)

    async def run_once(self) -> int:
        """Attempt everything due now; how many attempts were made."""
        if self._lock.locked():
            return 0
        total = 0
        async with self._lock:
            while not self.stopping:
                claimed = await self._store.claim_deliveries(
                    self._clock.now(), self._owner, CLAIM_BATCH, self.lease())
                if not claimed:
                    break
                outcomes = await asyncio.gather(*(self._bounded(c) for c in claimed))
                await self._store.settle_deliveries(list(outcomes), self._clock.now(),
                                                    self._owner)
                total += len(claimed)
                if len(claimed) < CLAIM_BATCH:
                    break
        return total

    async def _bounded(self, c: Claimed) -> Settled:
        async with self._slots:
            try:
                return await self.attempt(c)
            except Exception as exc:  # a row npsd cannot render: a letter, not a loop
                log.exception("delivery.dead_lettered", delivery_id=c.id, channel=c.channel,
                              type=c.event, reason=f"npsd failed: {exc.__class__.__name__}")
                self._count(c.channel, "dead")
                return Settled(c.id, DEAD, None, f"npsd failed: {exc.__class__.__name__}")

    async def attempt(self, c: Claimed) -> Settled:
        """One try of one delivery, judged."""
        s = self._settings()
        to = receiver(c.channel, c.target, s.alerts, s.webhooks)
        if to is None:
            self._count(c.channel, "dropped")
            log.info("delivery.dropped", delivery_id=c.id, channel=c.channel, type=c.event,
                     reason="receiver no longer configured")
            return Settled(c.id, DROPPED, error="receiver no longer configured")
        if c.channel == EMAIL:
            return await self._email(c, to, s)
        now = self._clock.now()
        if c.channel == WEBHOOK:
            secrets = (s.webhooks.secret, *s.webhooks.previous_secrets)
            sent = await self._post(to, c.body.encode(), s.webhooks.timeout,
                                    headers(secrets, c.webhook_id, now, c.body))
        else:
            sent = await self._post(to, slack_body(Alert.of(c.body, s.server.public_url)),
                                    s.webhooks.timeout, {})
        return self._judge(c, to, *sent)

    async def _post(self, url: str, body: bytes, limit: timedelta,
                    extra: dict[str, str]) -> _Answer:
        hdrs = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **extra}
        try:
            async with self._session.post(
                    url, data=body, headers=hdrs, allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=limit.total_seconds())) as resp:
                wait = resp.headers.get("Retry-After")
                after = parse_retry_after(wait, self._clock.now()) if wait else None
                return (resp.status, None,
                        timedelta(seconds=after) if after is not None else None)
        except TimeoutError:
            return None, f"no answer within {limit.total_seconds():g}s", None
        except aiohttp.ClientConnectorError as exc:
            return None, f"cannot connect: {exc.os_error.strerror or 'refused'}", None
        except (aiohttp.ClientError, OSError) as exc:
            return None, exc.__class__.__name__, None

    async def _email(self, c: Claimed, to: str, s: Settings) -> Settled:
        recipients = tuple(to.split(","))
        try:
            message = alert_email(Alert.of(c.body, s.server.public_url), s.email.sender,
                                  recipients, self._clock.now())
            await self._backend().send(message)
        except PermanentEmailError as exc:
            return self._judge(c, "", exc.code, redact(exc.reply)[:200], None, final=True)
        except EmailError as exc:
            return self._judge(c, "", exc.code, redact(exc.reply)[:200], None, retry=True)
        return self._judge(c, "", 250, None, None)

    def _judge(self, c: Claimed, to: str, status: int | None, error: str | None,
               retry_after: timedelta | None, *, final: bool = False,
               retry: bool = False) -> Settled:
        kind = "final" if final else "retry" if retry else verdict(status)
        where = {"channel": c.channel, "type": c.event, "delivery_id": c.id,
                 "host": urlsplit(to).hostname if to else None, "status": status}
        now = self._clock.now()
        if kind == "delivered":
            self._count(c.channel, "delivered")
            log.info("delivery.sent", attempts=c.attempts + 1, **where)
            return Settled(c.id, DELIVERED, status)
        error = error or (f"HTTP {status}" if status is not None else "no answer")
        if kind == "final" and status is not None and 300 <= status < 400:
            error = f"HTTP {status}: redirects are not followed; update the URL"
        due = None if kind == "final" else next_attempt(
            self._schedule, c.attempts + 1, c.retry_from, now, retry_after, self._rand)
        if due is None:
            self._count(c.channel, "dead")
            log.warning("delivery.dead_lettered", attempts=c.attempts + 1, reason=error,
                        **where)
            return Settled(c.id, DEAD, status, error)
        self._count(c.channel, "retry")
        log.info("delivery.retry", attempt=c.attempts + 1, reason=error,
                 delay_s=round((due - now).total_seconds(), 1), **where)
        return Settled(c.id, PENDING, status, error, due)

    def _count(self, channel: str, result: str) -> None:
        if self._on_result is not None:
            self._on_result(channel, result)

