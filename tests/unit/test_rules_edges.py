"""Survey rules at their edges (jobs/rules.py): the send window without a timezone trait,
max_delay, reminder_after and response_window below, at and just around a day, naive
datetimes refused by name, wrapping windows across a local date, and the sampling hash at
its boundary. Written for issue 18, where a mutation run found these unguarded."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, time, timedelta
from typing import Any

import pytest

from daemon.config import SendWindow, SurveySettings
from jobs.rules import (
    Candidate,
    Decision,
    decide_on_identify,
    expires_at,
    next_send_time,
    recheck_at_dispatch,
    reminder_due,
    sampled_in,
)
from tests.unit.test_rules import DAY, DEFAULTS, NOW, candidate, schedule, skip, utc, w

WINDOW = SendWindow(time(9), time(17))


@pytest.mark.parametrize(
    ("c", "settings", "expected"),
    [
        # No timezone trait: the window is read in survey.default_timezone. NOW is 07:00
        # in New York (EST, UTC-5), so 09:00 there is 14:00 UTC.
        pytest.param(
            candidate(created_at=NOW),
            replace(DEFAULTS, send_window=WINDOW, min_delay=timedelta(0),
                    default_timezone="America/New_York"),
            schedule(utc(2025, 1, 1, 14),
                     "createdAt+0s, moved into the 09:00-17:00 send window (America/New_York)"),
            id="no-timezone-trait-uses-default-timezone",
        ),
        pytest.param(
            candidate(timezone=""),
            replace(DEFAULTS, send_window=WINDOW, default_timezone="Asia/Tokyo"),
            # 21:00 in Tokyo (UTC+9): the next 09:00 there is 00:00 UTC.
            schedule(utc(2025, 1, 2),
                     "no createdAt, so at once, moved into the 09:00-17:00 send window "
                     "(Asia/Tokyo)"),
            id="empty-timezone-trait-no-created-at-uses-default",
        ),
        pytest.param(
            candidate(timezone="Asia/Tokyo"),
            replace(DEFAULTS, send_window=WINDOW, default_timezone="America/New_York"),
            schedule(utc(2025, 1, 2),
                     "no createdAt, so at once, moved into the 09:00-17:00 send window "
                     "(Asia/Tokyo)"),
            id="no-created-at-uses-the-recipients-timezone",
        ),
        pytest.param(
            candidate(),
            replace(DEFAULTS, send_window=WINDOW, default_timezone="Europe/Paris"),
            schedule(NOW, "no createdAt, so at once"),  # 13:00 in Paris: inside
            id="inside-the-window-in-the-default-timezone",
        ),
    ],
)
def test_send_window_timezone(c: Candidate, settings: SurveySettings, expected: Decision) -> None:
    assert decide_on_identify(c, settings, NOW) == expected


@pytest.mark.parametrize(
    ("tz", "expected"),
    [
        ("Asia/Tokyo", "Asia/Tokyo"),
        (None, "Europe/Paris"),
        ("", "Europe/Paris"),
        ("Not/AZone", "Europe/Paris"),
        ("../../etc/passwd", "Europe/Paris"),  # ZoneInfo raises ValueError, not NotFound
    ],
)
def test_recipient_timezone(tz: str | None, expected: str) -> None:
    from jobs.rules import recipient_timezone

    s = replace(DEFAULTS, default_timezone="Europe/Paris")
    assert recipient_timezone(candidate(timezone=tz), s) == expected


H = timedelta(hours=1)
S = timedelta(seconds=1)


@pytest.mark.parametrize(
    ("max_delay", "age", "expected"),
    [
        # Sub-day and about-a-day max_delay values, each at, just inside and just past it.
        (12 * H, 30 * 60 * S, schedule(NOW + 30 * 60 * S, "createdAt+1h")),
        (12 * H, 11 * H, schedule(NOW, "createdAt+1h had passed, so at once")),
        (12 * H, 12 * H, schedule(NOW, "createdAt+1h had passed, so at once")),
        (12 * H, 12 * H + S, skip("older than max_delay (createdAt+12h)")),
        (DAY - S, DAY - S, schedule(NOW, "createdAt+1h had passed, so at once")),
        (DAY - S, DAY, skip("older than max_delay (createdAt+86399s)")),
        (DAY, DAY, schedule(NOW, "createdAt+1h had passed, so at once")),
        (DAY, DAY + S, skip("older than max_delay (createdAt+1d)")),
        (DAY + S, DAY + S, schedule(NOW, "createdAt+1h had passed, so at once")),
        (DAY + S, DAY + 2 * S, skip("older than max_delay (createdAt+86401s)")),
        (36 * H, 30 * H, schedule(NOW, "createdAt+1h had passed, so at once")),
        (36 * H, 37 * H, skip("older than max_delay (createdAt+36h)")),
        (S, 2 * S, skip("older than max_delay (createdAt+1s)")),
    ],
)
def test_max_delay_under_and_around_a_day(
    max_delay: timedelta, age: timedelta, expected: Decision
) -> None:
    s = replace(DEFAULTS, max_delay=max_delay, min_delay=H)
    assert decide_on_identify(candidate(created_at=NOW - age), s, NOW) == expected


@pytest.mark.parametrize(
    ("reminder_after", "expected"),
    [
        (timedelta(0), None),
        (-H, None),
        (S, NOW + S),
        (12 * H, NOW + 12 * H),
        (DAY - S, NOW + DAY - S),
        (DAY, NOW + DAY),
        (DAY + S, NOW + DAY + S),
        (36 * H, NOW + 36 * H),
    ],
)
def test_reminder_after_under_and_around_a_day(
    reminder_after: timedelta, expected: datetime | None
) -> None:
    assert reminder_due(NOW, replace(DEFAULTS, reminder_after=reminder_after)) == expected


@pytest.mark.parametrize(
    ("response_window", "expected"),
    [(12 * H, NOW + 12 * H), (DAY - S, NOW + DAY - S), (DAY + S, NOW + DAY + S)],
)
def test_response_window_under_and_around_a_day(
    response_window: timedelta, expected: datetime
) -> None:
    assert expires_at(NOW, replace(DEFAULTS, response_window=response_window)) == expected


NAIVE = datetime(2025, 1, 1, 12)


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: decide_on_identify(candidate(), DEFAULTS, NAIVE), "now"),
        (lambda: decide_on_identify(candidate(created_at=NAIVE), DEFAULTS, NOW), "created_at"),
        (lambda: decide_on_identify(candidate(last_survey_at=NAIVE), DEFAULTS, NOW),
         "last_survey_at"),
        (lambda: next_send_time(NAIVE, WINDOW, "UTC"), "due"),
        (lambda: expires_at(NAIVE, DEFAULTS), "sent_at"),
        (lambda: reminder_due(NAIVE, replace(DEFAULTS, reminder_after=DAY)), "sent_at"),
        (lambda: recheck_at_dispatch(candidate(), NAIVE), "now"),
    ],
)
def test_naive_datetimes_are_refused_by_name(call: Any, name: str) -> None:
    with pytest.raises(ValueError, match=rf"^{name} must be timezone-aware, got naive 2025-"):
        call()


@pytest.mark.parametrize(
    ("due", "window", "tz", "expected"),
    [
        # Late afternoon in Los Angeles is already tomorrow in UTC: the window that opened
        # yesterday evening (local) is still open.
        pytest.param(utc(2025, 1, 3, 0, 30), w("18:00", "17:00"), "America/Los_Angeles",
                     utc(2025, 1, 3, 0, 30), id="la-wrapping-window-from-the-local-day-before"),
        pytest.param(utc(2025, 1, 3, 1, 30), w("18:00", "17:00"), "America/Los_Angeles",
                     utc(2025, 1, 3, 2), id="la-wrapping-window-closed-opens-at-18"),
        # 2026-03-07 03:00 EST, after that day's window; the next day's window lies in the
        # spring-forward gap, so the first window is two local days later (EDT, UTC-4).
        pytest.param(utc(2026, 3, 7, 8), w("02:15", "02:45"), "America/New_York",
                     utc(2026, 3, 9, 6, 15), id="ny-two-days-ahead-across-a-gap"),
        # The docstring: an end not after the start wraps; the same time is a 24 h window.
        pytest.param(utc(2025, 1, 1, 3), w("09:00", "09:00"), "UTC", utc(2025, 1, 1, 3),
                     id="end-equal-to-start-is-open-all-day"),
    ],
)
def test_next_send_time_edges(
    due: datetime, window: SendWindow, tz: str, expected: datetime
) -> None:
    assert next_send_time(due, window, tz) == expected


def test_sampled_in_is_the_documented_hash_below_the_rate() -> None:
    """A user is in when the first 8 bytes of SHA-256(userId), as a fraction of 2**64, are
    below the rate: pinned, so the sample cannot drift with a code change."""
    import hashlib
    import math

    for user_id in ["user-1", "ada@example.com", "é-😀", "42"]:
        x = int.from_bytes(hashlib.sha256(user_id.encode()).digest()[:8], "big") / 2**64
        assert sampled_in(user_id, x) is False  # strictly below
        assert sampled_in(user_id, math.nextafter(x, 1.0)) is True
        assert sampled_in(user_id, 1.0) is True
        assert sampled_in(user_id, 0.0) is False
