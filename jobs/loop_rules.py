"""The rules of alerts and webhook deliveries, as pure functions with table tests
(tests/unit/test_loop_rules.py): when an answer raises an alert, what an HTTP answer means
for a delivery, and when the next attempt is due. The retry schedule is data
(`RetrySchedule`), so the policy can be read, tested and changed in one place."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

Verdict = Literal["delivered", "retry", "final"]


def category(score: int) -> str:
    """NPS: 9–10 promoter, 7–8 passive, 0–6 detractor."""
    return "promoter" if score >= 9 else "passive" if score >= 7 else "detractor"


def raises_alert(score: int, previous: int | None, below: int) -> bool:
    """An answer alerts when its score is under `below` (0: alerts off) and the answer it
    revises, if any, was not: a first low answer, or a revision down into the range. A
    revision from one low score to another does not alert twice."""
    if below <= 0 or score >= below:
        return False
    return previous is None or previous >= below


def verdict(status: int | None) -> Verdict:
    """What a receiver's HTTP status means. None (no answer: refused, reset, timed out),
    408, 429 and 5xx are worth retrying; 2xx is delivered; any other 4xx is final, and so is
    a 3xx: npsd does not follow redirects (the operator updates the URL instead)."""
    if status is None or status in (408, 429) or status >= 500:
        return "retry"
    if 200 <= status < 300:
        return "delivered"
    return "final"


@dataclass(frozen=True)
class RetrySchedule:
    """Retried after each of `delays`, then every `then` (± `jitter`, a fraction) until
    `horizon` after the first attempt; after that the delivery is a dead letter."""

    delays: tuple[timedelta, ...]
    then: timedelta
    jitter: float
    horizon: timedelta

    def __post_init__(self) -> None:
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be a fraction in [0, 1)")
        if self.then <= timedelta(0) or any(d <= timedelta(0) for d in self.delays):
            raise ValueError("delays must be positive")


# SPEC "Closing the loop": 5 s, 30 s, 2 min, 10 min, 30 min, 1 h, then hourly ±20 % for 24 h.
DELIVERY_RETRY = RetrySchedule(
    delays=(timedelta(seconds=5), timedelta(seconds=30), timedelta(minutes=2),
            timedelta(minutes=10), timedelta(minutes=30), timedelta(hours=1)),
    then=timedelta(hours=1), jitter=0.2, horizon=timedelta(hours=24))


def retry_delay(schedule: RetrySchedule, failures: int,
                rand: Callable[[], float] = random.random) -> timedelta:
    """The wait after the `failures`-th failed attempt (1 for the first)."""
    if failures <= len(schedule.delays):
        return schedule.delays[max(failures, 1) - 1]
    spread = (2 * rand() - 1) * schedule.jitter  # uniform in [-jitter, +jitter)
    return schedule.then * (1 + spread)


def next_attempt(schedule: RetrySchedule, failures: int, retry_from: datetime,
                 now: datetime, retry_after: timedelta | None = None,
                 rand: Callable[[], float] = random.random) -> datetime | None:
    """When to try again after the `failures`-th failure at `now`; None once that would
    be past the horizon (a dead letter). A receiver's Retry-After is honoured when it asks
    for longer than the schedule."""
    wait = retry_delay(schedule, failures, rand)
    if retry_after is not None and retry_after > wait:
        wait = min(retry_after, schedule.then * (1 + schedule.jitter))
    due = now + wait
    return None if due > retry_from + schedule.horizon else due
