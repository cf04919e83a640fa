"""The HTTP client npsd sends sync-back batches with: ``POST {endpoint}/batch``.

Retry policy is data (``RetryPolicy``): 429, 5xx, timeouts and connection errors are
transient and retried with capped full-jitter backoff that honours ``Retry-After``; any
other answer is final. A 400 batch is split to isolate the message Segment refuses.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal

import aiohttp
import structlog

from jobs.clock import Clock, SystemClock
from jobs.sync_batching import Encoded, batch_body

log = structlog.get_logger(__name__)

BatchStatus = Literal["ok", "rejected", "unauthorized", "gave_up"]

# Statuses where splitting the batch can help: the body, or one message in it, is bad.
SPLITTABLE_STATUSES = frozenset({400, 413})
_MAX_REASON_CHARS = 500


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8  # total tries, the first one included
    base_s: float = 0.5
    cap_s: float = 60.0
    timeout_s: float = 30.0  # per attempt, connect to last byte

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_s < 0 or self.cap_s < 0:
            raise ValueError("base_s and cap_s must not be negative")
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be positive")


@dataclass(frozen=True)
class BatchResult:
    status: BatchStatus
    http_status: int | None  # None when the last attempt got no answer at all
    attempts: int
    message: str  # Segment's reason, or the transport error; "" on success

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class SegmentSendAborted(Exception):
    """``send_isolating`` stopped on a failure splitting cannot fix.

    That is a refused write key, a transient failure that outlasted the retry policy,
    or a refusal that is not about the messages (404, 405 …). It carries what was settled
    before the stop, so the caller can checkpoint it and retry ``pending`` later.
    """

    def __init__(
        self,
        result: BatchResult,
        delivered: list[Any],
        rejected: list[tuple[Any, str]],
        pending: list[Any],
    ) -> None:
        super().__init__(f"segment {result.status}: {result.http_status} {result.message}")
        self.result = result
        # The Encoded messages as given to send_isolating.
        self.delivered = delivered
        self.rejected = rejected
        self.pending = pending


def backoff_s(
    attempt: int, policy: RetryPolicy, rand: Callable[[], float] = random.random
) -> float:
    """Capped full jitter: uniform in [0, min(cap, base * 2**attempt)); attempt counts from 0."""
    # Clamp the exponent: 2.0**1024 overflows, and the cap is reached long before.
    ceiling = min(policy.cap_s, policy.base_s * 2.0 ** min(max(attempt, 0), 64))
    return rand() * ceiling


def parse_retry_after(value: str, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After value (delta-seconds or HTTP date); None if unusable."""
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # HTTP dates are GMT by definition
            when = when.replace(tzinfo=UTC)
        seconds = (when - now).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def is_transient(status: int) -> bool:
    return status == 429 or 500 <= status <= 599


@dataclass(frozen=True)
class _Answer:
    http_status: int | None
    reason: str
    retry_after_s: float | None = None


class SegmentClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        endpoint: str,
        write_key: str,
        policy: RetryPolicy,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        *,
        clock: Clock | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._session = session
        self._url = endpoint.rstrip("/") + "/batch"
        token = base64.b64encode(f"{write_key}:".encode()).decode("ascii")
        self._headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}
        self._policy = policy
        self._sleep = sleep
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._rand = rand

    async def send_batch(self, parts: Sequence[bytes], sent_at: str | None = None
                         ) -> BatchResult:
        """Send one batch of serialised messages (the body is joined, not re-encoded),
        retrying transient failures as the policy allows."""
        data = batch_body(parts, sent_at)
        policy = self._policy
        answer = _Answer(None, "not sent")
        for attempt in range(1, policy.max_attempts + 1):
            answer = await self._post(data)
            status = answer.http_status
            if status is not None and not is_transient(status):
                return self._final(status, attempt, answer.reason, len(parts))
            if attempt == policy.max_attempts:
                break
            delay = backoff_s(attempt - 1, policy, self._rand)
            if answer.retry_after_s is not None:
                delay = max(delay, answer.retry_after_s)
            delay = min(delay, policy.cap_s)
            log.warning(
                "sync.batch_retrying",
                attempt=attempt,
                http_status=status,
                delay_s=round(delay, 3),
                messages=len(parts),
            )
            await self._sleep(delay)
        log.error(
            "sync.batch_gave_up",
            attempts=policy.max_attempts,
            http_status=answer.http_status,
            messages=len(parts),
        )
        return BatchResult("gave_up", answer.http_status, policy.max_attempts, answer.reason)

    async def send_isolating(
        self, messages: list[Encoded], sent_at: str | None = None
    ) -> tuple[list[Encoded], list[tuple[Encoded, str]]]:
        """Send ``messages``; split batches Segment refuses until each bad message is alone.

        Returns (delivered, rejected with Segment's reason). Raises SegmentSendAborted
        (carrying the messages as given) when a failure is not about the messages, so
        nothing is wrongly marked rejected.
        """
        delivered: list[Encoded] = []
        rejected: list[tuple[Encoded, str]] = []
        # A stack of chunks still to send, the next on top, so order is kept.
        stack = [messages] if messages else []
        while stack:
            chunk = stack.pop()
            result = await self.send_batch([e.data for e in chunk], sent_at)
            if result.ok:
                delivered.extend(chunk)
            elif result.status == "rejected" and result.http_status in SPLITTABLE_STATUSES:
                if len(chunk) == 1:
                    log.warning(
                        "sync.message_isolated",
                        message_id=chunk[0].message_id,
                        http_status=result.http_status,
                    )
                    rejected.append((chunk[0], result.message))
                else:
                    half = len(chunk) // 2
                    stack.extend([chunk[half:], chunk[:half]])
            else:
                pending = [m for c in [chunk, *reversed(stack)] for m in c]
                raise SegmentSendAborted(result, delivered, rejected, pending)
        return delivered, rejected

    def _final(self, status: int, attempts: int, reason: str, count: int) -> BatchResult:
        if 200 <= status < 300:
            return BatchResult("ok", status, attempts, "")
        if status in (401, 403):
            # A wrong write key fails every batch alike: neither retry nor split.
            log.error("sync.unauthorized", http_status=status)
            return BatchResult("unauthorized", status, attempts, reason)
        log.warning("sync.batch_rejected", http_status=status, messages=count)
        return BatchResult("rejected", status, attempts, reason)

    async def _post(self, data: bytes) -> _Answer:
        timeout = aiohttp.ClientTimeout(total=self._policy.timeout_s)
        try:
            async with self._session.post(
                self._url,
                data=data,
                headers=self._headers,
                timeout=timeout,
                allow_redirects=False,  # a redirected POST would come back as a GET
            ) as response:
                text = await response.text(errors="replace")
                retry_after = None
                if is_transient(response.status) and "Retry-After" in response.headers:
                    retry_after = parse_retry_after(
                        response.headers["Retry-After"], self._server_now(response)
                    )
                return _Answer(response.status, _reason(text), retry_after)
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
            return _Answer(None, f"{type(exc).__name__}: {exc}".rstrip(": "))

    def _server_now(self, response: aiohttp.ClientResponse) -> datetime:
        # An HTTP-date Retry-After is measured against the server's own Date header,
        # which makes it immune to skew between our clock and Segment's.
        date = response.headers.get("Date")
        if date:
            try:
                parsed = parsedate_to_datetime(date)
            except (TypeError, ValueError):
                pass
            else:
                return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        return self._clock.now()


def _reason(text: str) -> str:
    """Segment's error message from a response body, else the body itself, shortened."""
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        text = body["message"]
    return text[:_MAX_REASON_CHARS]
