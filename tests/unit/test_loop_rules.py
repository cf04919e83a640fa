"""The rules of alerts and deliveries (jobs/loop_rules.py) as tables of cases."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from jobs.loop_rules import (
    DELIVERY_RETRY,
    RetrySchedule,
    category,
    next_attempt,
    raises_alert,
    retry_delay,
    verdict,
)

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
S, M, H = timedelta(seconds=1), timedelta(minutes=1), timedelta(hours=1)


@pytest.mark.parametrize(("score", "previous", "below", "alerts"), [
    (3, None, 7, True),      # a first low answer
    (6, None, 7, True),      # the highest score under the threshold
    (7, None, 7, False),     # the threshold itself is not below it
    (10, None, 7, False),
    (2, 3, 7, False),        # a revision to another detractor score: not twice
    (3, 3, 7, False),        # the same score again
    (3, 8, 7, True),         # a revision down into the range
    (8, 3, 7, False),        # up out of it
    (0, None, 0, False),     # 0 = alerts off
    (0, None, 1, True),      # only 0 is below 1
    (9, None, 11, True),     # every score is below 11
    (9, 10, 11, False),
])
def test_raises_alert(score: int, previous: int | None, below: int, alerts: bool) -> None:
    assert raises_alert(score, previous, below) is alerts


@pytest.mark.parametrize(("score", "name"), [
    (0, "detractor"), (6, "detractor"), (7, "passive"), (8, "passive"), (9, "promoter"),
    (10, "promoter")])
def test_category(score: int, name: str) -> None:
    assert category(score) == name


@pytest.mark.parametrize(("status", "meaning"), [
    (200, "delivered"), (201, "delivered"), (204, "delivered"), (299, "delivered"),
    (None, "retry"), (408, "retry"), (429, "retry"), (500, "retry"), (502, "retry"),
    (503, "retry"), (504, "retry"),
    (400, "final"), (401, "final"), (403, "final"), (404, "final"), (410, "final"),
    (413, "final"), (422, "final"),
    (301, "final"), (302, "final"), (307, "final"), (308, "final"),  # never followed
    (100, "final"),
])
def test_verdict(status: int | None, meaning: str) -> None:
    assert verdict(status) == meaning


@pytest.mark.parametrize(("failures", "wait"), [
    (1, 5 * S), (2, 30 * S), (3, 2 * M), (4, 10 * M), (5, 30 * M), (6, H)])
def test_the_first_six_waits_are_fixed(failures: int, wait: timedelta) -> None:
    assert retry_delay(DELIVERY_RETRY, failures, lambda: 0.0) == wait
    assert retry_delay(DELIVERY_RETRY, failures, lambda: 0.999) == wait


@pytest.mark.parametrize(("rand", "wait"), [
    (0.0, 48 * M), (0.5, H), (0.75, 66 * M), (0.999999, 72 * M - timedelta(microseconds=1440))])
def test_then_hourly_within_twenty_percent(rand: float, wait: timedelta) -> None:
    for failures in (7, 8, 30):
        got = retry_delay(DELIVERY_RETRY, failures, lambda r=rand: r)  # type: ignore[misc]
        assert abs(got - wait) < timedelta(milliseconds=1)


def test_next_attempt_until_the_24_hour_horizon_then_dead() -> None:
    now, failures, times = T0, 0, []
    while True:
        failures += 1
        due = next_attempt(DELIVERY_RETRY, failures, T0, now, rand=lambda: 0.5)
        if due is None:
            break
        times.append(due)
        now = due
    assert times[:6] == [T0 + d for d in (5 * S, 35 * S, 155 * S, 755 * S, 2555 * S, 6155 * S)]
    assert all(b - a == H for a, b in itertools.pairwise(times[6:]))
    assert times[-1] <= T0 + 24 * H < times[-1] + H
    assert failures == len(times) + 1 == 29  # 6 fixed + 22 hourly retries, then the letter


def test_retry_after_is_honoured_when_longer_and_capped() -> None:
    mid = lambda: 0.5  # noqa: E731
    assert next_attempt(DELIVERY_RETRY, 1, T0, T0, 2 * M, mid) == T0 + 2 * M
    assert next_attempt(DELIVERY_RETRY, 3, T0, T0, 1 * S, mid) == T0 + 2 * M  # shorter: ours
    assert next_attempt(DELIVERY_RETRY, 1, T0, T0, 30 * H, mid) == T0 + 72 * M  # capped
    assert next_attempt(DELIVERY_RETRY, 1, T0, T0 + 24 * H, None, mid) is None


def test_a_replayed_letter_gets_a_new_horizon() -> None:
    replayed = T0 + 48 * H
    assert next_attempt(DELIVERY_RETRY, 29, T0, replayed) is None
    assert next_attempt(DELIVERY_RETRY, 29, replayed, replayed) is not None


@pytest.mark.parametrize("bad", [
    {"jitter": 1.0}, {"jitter": -0.1}, {"then": timedelta(0)}, {"delays": (timedelta(0),)}])
def test_schedule_refuses_nonsense(bad: dict[str, object]) -> None:
    base: dict[str, object] = {"delays": (S,), "then": H, "jitter": 0.2, "horizon": 24 * H}
    with pytest.raises(ValueError):
        RetrySchedule(**{**base, **bad})  # type: ignore[arg-type]
