"""The sign-in limiter's buckets (daemon/console/login_limit.py), as tables over `now`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from daemon.console.login_limit import LoginLimiter

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def limiter() -> LoginLimiter:
    return LoginLimiter(address_burst=3, address_every=timedelta(seconds=30), global_burst=5,
                        global_every=timedelta(seconds=1), max_addresses=2)


def fail(lim: LoginLimiter, address: str, times: int, at: datetime = T0) -> None:
    for _ in range(times):
        assert lim.check(address, at) is None
        lim.failed(address, at)


@pytest.mark.parametrize(("failures", "later_s", "refused_scope", "wait_s"), [
    (2, 0, None, 0),  # under the burst
    (3, 0, "address", 30),  # the burst used up: one back in 30 s
    (3, 15, "address", 15),  # half refilled
    (3, 30, None, 0),  # one attempt back
])
def test_one_address(failures: int, later_s: int, refused_scope: str | None,
                     wait_s: int) -> None:
    lim = limiter()
    fail(lim, "a", failures)
    refused = lim.check("a", T0 + timedelta(seconds=later_s))
    if refused_scope is None:
        assert refused is None
    else:
        assert refused is not None and refused.scope == refused_scope
        assert refused.seconds == wait_s


def test_everyone_together_and_a_clock_going_back() -> None:
    lim = LoginLimiter(address_burst=3, address_every=timedelta(seconds=30), global_burst=5,
                       global_every=timedelta(seconds=1))
    fail(lim, "a", 3)
    fail(lim, "b", 2)
    refused = lim.check("c", T0)
    assert refused is not None and (refused.scope, refused.seconds) == ("all", 1)
    assert lim.check("c", T0 + timedelta(seconds=1)) is None
    lim.failed("c", T0 + timedelta(seconds=1))
    assert lim.check("c", T0 - timedelta(hours=1)) is not None  # no refill backwards


def test_a_right_token_takes_nothing_and_old_addresses_are_forgotten() -> None:
    lim = limiter()
    for _ in range(10):
        assert lim.check("a", T0) is None  # checks alone take nothing
    fail(lim, "a", 3)
    assert lim.check("a", T0) is not None
    lim.check("b", T0)
    lim.check("c", T0)  # max_addresses=2: "a", the least recently used, is dropped
    assert lim.check("a", T0) is None
