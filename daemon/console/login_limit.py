"""Sign-in attempts, rate-limited: a token bucket per remote address and one for everyone,
so guessing console tokens is slow from one address and from many (a token is 128+ bits,
but a weak one chosen by hand is not). Each wrong token takes one from both buckets (a
right one takes nothing, so a team signing in is never held); while either is empty, an
attempt is answered 429 before its token is even compared, with the time to try again.
Pure arithmetic on the one clock's `now`; the buckets live in memory (a restart forgets
them, which costs a guesser a restart).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta

from aiohttp import web

# Per address: a burst of 10, then one attempt every 30 s (a person retyping is never held).
ADDRESS_BURST, ADDRESS_EVERY = 10, timedelta(seconds=30)
# Everyone together: a burst of 60, then one attempt a second.
GLOBAL_BURST, GLOBAL_EVERY = 60, timedelta(seconds=1)
MAX_ADDRESSES = 10_000  # buckets kept; the least recently used one goes first


@dataclass
class Bucket:
    """`burst` attempts at once, refilled by one every `every`."""

    burst: int
    every: timedelta
    tokens: float
    at: datetime

    def refill(self, now: datetime) -> None:
        if now > self.at:
            gained = (now - self.at) / self.every
            self.tokens = min(float(self.burst), self.tokens + gained)
        self.at = max(self.at, now)

    def wait(self) -> timedelta:
        """How long until one attempt is allowed (zero when it is now)."""
        if self.tokens >= 1:
            return timedelta(0)
        return self.every * (1 - self.tokens)


@dataclass(frozen=True)
class Refused:
    scope: str  # "address" or "all"
    retry_after: timedelta

    @property
    def seconds(self) -> int:
        return max(1, math.ceil(self.retry_after.total_seconds()))


class LoginLimiter:
    def __init__(self, address_burst: int = ADDRESS_BURST,
                 address_every: timedelta = ADDRESS_EVERY, global_burst: int = GLOBAL_BURST,
                 global_every: timedelta = GLOBAL_EVERY,
                 max_addresses: int = MAX_ADDRESSES) -> None:
        self._address = (address_burst, address_every)
        self._global_args = (global_burst, global_every)
        self._global: Bucket | None = None
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()
        self._max = max_addresses

    def check(self, address: str, now: datetime) -> Refused | None:
        """Whether `address` may try a token at `now`: None, or a Refused when its bucket
        or everyone's is empty."""
        mine, everyone = self._refilled(address, now)
        for scope, bucket in (("address", mine), ("all", everyone)):
            if bucket.tokens < 1:
                return Refused(scope, bucket.wait())
        return None

    def failed(self, address: str, now: datetime) -> None:
        """A wrong token from `address` at `now`: one attempt less for it and for all."""
        for bucket in self._refilled(address, now):
            bucket.tokens = max(0.0, bucket.tokens - 1)

    def _refilled(self, address: str, now: datetime) -> tuple[Bucket, Bucket]:
        everyone = self._global
        if everyone is None:
            everyone = self._global = Bucket(*self._global_args, self._global_args[0], now)
        mine = self._buckets.pop(address, None)
        if mine is None:
            mine = Bucket(*self._address, self._address[0], now)
        self._buckets[address] = mine  # most recently used last
        while len(self._buckets) > self._max:
            self._buckets.popitem(last=False)
        for bucket in (mine, everyone):
            bucket.refill(now)
        return mine, everyone


LOGIN_LIMITER = web.AppKey("login_limiter", LoginLimiter)
