"""Table tests for the survey rules (jobs/rules.py)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest

from daemon.config import SendWindow, SurveySettings
from jobs.rules import (
    Candidate,
    Decision,
    category,
    decide_on_identify,
    expires_at,
    next_send_time,
    nps,
    recheck_at_dispatch,
    reminder_due,
    sampled_in,
)

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
INTERVAL = timedelta(weeks=26)
DEFAULTS = SurveySettings()  # min 3d, max 14d, interval 26w
ALWAYS = SurveySettings(max_delay=timedelta(0))


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def candidate(**changes: Any) -> Candidate:
    base = Candidate(
        user_id="u1",
        email="ada@example.com",
        created_at=None,
        timezone=None,
        unsubscribed=False,
        suppressed=False,
        has_pending=False,
        last_survey_at=None,
    )
    return replace(base, **changes)


def schedule(due: datetime, why: str) -> Decision:
    return Decision("schedule", f"scheduled for {due:%Y-%m-%dT%H:%M:%SZ}: {why}", due)


def skip(why: str) -> Decision:
    return Decision("skip", f"skipped: {why}")


@pytest.mark.parametrize(
    ("c", "settings", "expected"),
    [
        pytest.param(candidate(email=None), DEFAULTS, skip("no email trait"), id="no-email"),
        pytest.param(candidate(email="  "), DEFAULTS, skip("no email trait"), id="blank-email"),
        pytest.param(candidate(unsubscribed=True), DEFAULTS, skip("unsubscribed"), id="unsub"),
        pytest.param(candidate(suppressed=True), DEFAULTS, skip("suppressed"), id="suppressed"),
        pytest.param(
            candidate(has_pending=True, created_at=NOW),
            DEFAULTS,
            skip("a survey is already pending"),
            id="pending",
        ),
        pytest.param(
            candidate(created_at=NOW),
            DEFAULTS,
            schedule(NOW + 3 * DAY, "createdAt+3d"),
            id="new-customer-min-delay-in-future",
        ),
        pytest.param(
            candidate(created_at=NOW - DAY),
            DEFAULTS,
            schedule(NOW + 2 * DAY, "createdAt+3d"),
            id="created-yesterday",
        ),
        pytest.param(
            candidate(created_at=NOW - 5 * DAY),
            DEFAULTS,
            schedule(NOW, "createdAt+3d had passed, so at once"),
            id="min-delay-passed",
        ),
        pytest.param(
            candidate(created_at=NOW - 20 * DAY),
            DEFAULTS,
            skip("older than max_delay (createdAt+2w)"),
            id="older-than-max-delay",
        ),
        pytest.param(
            candidate(created_at=NOW - 14 * DAY),
            DEFAULTS,
            schedule(NOW, "createdAt+3d had passed, so at once"),
            id="exactly-at-max-delay",
        ),
        pytest.param(
            candidate(created_at=NOW - 14 * DAY - timedelta(seconds=1)),
            DEFAULTS,
            skip("older than max_delay (createdAt+2w)"),
            id="one-second-past-max-delay",
        ),
        pytest.param(
            candidate(created_at=NOW - 5 * DAY, last_survey_at=NOW - 10 * DAY),
            DEFAULTS,
            skip(
                "surveyed within the 26w interval "
                "(last 2024-12-22T12:00:00Z, next possible 2025-06-22T12:00:00Z)"
            ),
            id="delayed-but-surveyed-within-interval",
        ),
        pytest.param(
            candidate(created_at=NOW - 5 * DAY, last_survey_at=NOW - INTERVAL),
            DEFAULTS,
            schedule(NOW, "createdAt+3d had passed, so at once"),
            id="delayed-interval-just-ended",
        ),
        pytest.param(
            candidate(created_at=NOW - 400 * DAY),
            ALWAYS,
            schedule(NOW, "max_delay is 0, so at once"),
            id="max-delay-0-no-earlier-survey",
        ),
        pytest.param(
            candidate(created_at=NOW - 400 * DAY, last_survey_at=NOW - 30 * DAY),
            ALWAYS,
            schedule(NOW - 30 * DAY + INTERVAL, "re-survey when the 26w interval ends"),
            id="max-delay-0-earlier-survey-deferred",
        ),
        pytest.param(
            candidate(),
            DEFAULTS,
            schedule(NOW, "no createdAt, so at once"),
            id="no-created-at",
        ),
        pytest.param(
            candidate(last_survey_at=NOW - INTERVAL + timedelta(seconds=1)),
            DEFAULTS,
            schedule(NOW + timedelta(seconds=1), "re-survey when the 26w interval ends"),
            id="interval-one-second-before-end",
        ),
        pytest.param(
            candidate(last_survey_at=NOW - INTERVAL),
            DEFAULTS,
            schedule(NOW, "no createdAt, so at once"),
            id="interval-exactly-at-end",
        ),
        pytest.param(
            candidate(last_survey_at=NOW - INTERVAL - timedelta(seconds=1)),
            DEFAULTS,
            schedule(NOW, "no createdAt, so at once"),
            id="interval-one-second-after-end",
        ),
        pytest.param(
            candidate(created_at=NOW, timezone="America/New_York"),
            replace(DEFAULTS, send_window=SendWindow(time(9), time(17)), min_delay=timedelta(0)),
            schedule(
                utc(2025, 1, 1, 14),
                "createdAt+0s, moved into the 09:00-17:00 send window (America/New_York)",
            ),
            id="send-window-in-recipient-timezone",
        ),
        pytest.param(
            candidate(created_at=NOW, timezone="Not/AZone"),
            replace(DEFAULTS, send_window=SendWindow(time(9), time(17))),
            schedule(NOW + 3 * DAY, "createdAt+3d"),
            id="bad-timezone-falls-back-to-default",
        ),
    ],
)
def test_decide_on_identify(c: Candidate, settings: SurveySettings, expected: Decision) -> None:
    assert decide_on_identify(c, settings, NOW) == expected


def test_decide_refuses_naive_now() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        decide_on_identify(candidate(), DEFAULTS, datetime(2025, 1, 1))


def test_at_most_once_per_interval_on_repeated_identify() -> None:
    """Repeated identifies with max_delay=0 never bring the re-survey forward."""
    last = NOW - 10 * DAY
    decisions = {
        decide_on_identify(candidate(last_survey_at=last), ALWAYS, NOW + k * DAY).due_at
        for k in range(0, 100, 7)
    }
    assert decisions == {last + INTERVAL}


@pytest.mark.parametrize(
    ("c", "expected"),
    [
        (candidate(), None),
        (candidate(email=None), "no email any more"),
        (candidate(email=""), "no email any more"),
        (candidate(unsubscribed=True), "unsubscribed"),
        (candidate(suppressed=True), "suppressed"),
        # The pending survey being dispatched is the user's own: not a reason to stop.
        (candidate(has_pending=True), None),
    ],
)
def test_recheck_at_dispatch(c: Candidate, expected: str | None) -> None:
    assert recheck_at_dispatch(c, NOW) == expected


class TestSampling:
    def test_deterministic(self) -> None:
        users = [f"user-{i}" for i in range(200)]
        first = [sampled_in(u, 0.3) for u in users]
        assert first == [sampled_in(u, 0.3) for u in users]

    def test_known_values_do_not_drift(self) -> None:
        # Pinned: changing the hash would move users in and out of the sample.
        assert [sampled_in(f"user-{i}", 0.5) for i in range(8)] == _PINNED

    @pytest.mark.parametrize(("rate", "low", "high"), [(0.1, 50, 150), (0.5, 420, 580)])
    def test_rate_is_roughly_honoured(self, rate: float, low: int, high: int) -> None:
        count = sum(sampled_in(f"user-{i}", rate) for i in range(1000))
        assert low <= count <= high

    def test_monotone_in_rate(self) -> None:
        # A user in at 10% stays in at 50%: raising the rate only adds users.
        for i in range(300):
            if sampled_in(f"user-{i}", 0.1):
                assert sampled_in(f"user-{i}", 0.5)

    @pytest.mark.parametrize(("rate", "expected"), [(0.0, False), (1.0, True)])
    def test_extremes(self, rate: float, expected: bool) -> None:
        assert all(sampled_in(f"user-{i}", rate) is expected for i in range(100))

    def test_decide_skips_users_outside_the_sample(self) -> None:
        out = next(f"user-{i}" for i in range(100) if not sampled_in(f"user-{i}", 0.5))
        decision = decide_on_identify(candidate(user_id=out), replace(ALWAYS, sample_rate=0.5), NOW)
        assert decision == skip("not in the sample (sample_rate 0.5)")


_PINNED = [True, False, False, False, False, True, True, True]


def w(start: str, end: str) -> SendWindow:
    def parse(text: str) -> time:
        hours, minutes = text.split(":")
        return time(int(hours), int(minutes))

    return SendWindow(parse(start), parse(end))


@pytest.mark.parametrize(
    ("due", "window", "tz", "expected"),
    [
        pytest.param(utc(2025, 1, 1, 3), None, "UTC", utc(2025, 1, 1, 3), id="no-window"),
        pytest.param(
            utc(2025, 1, 1, 3), w("09:00", "17:00"), "UTC", utc(2025, 1, 1, 9), id="utc-before"
        ),
        pytest.param(
            utc(2025, 1, 1, 12), w("09:00", "17:00"), "UTC", utc(2025, 1, 1, 12), id="utc-inside"
        ),
        pytest.param(
            utc(2025, 1, 1, 9), w("09:00", "17:00"), "UTC", utc(2025, 1, 1, 9), id="utc-at-start"
        ),
        pytest.param(
            utc(2025, 1, 1, 17),
            w("09:00", "17:00"),
            "UTC",
            utc(2025, 1, 2, 9),
            id="utc-end-is-exclusive",
        ),
        pytest.param(
            utc(2025, 1, 1, 16, 59),
            w("09:00", "17:00"),
            "UTC",
            utc(2025, 1, 1, 16, 59),
            id="utc-last-minute",
        ),
        # Paris is UTC+1 in winter, UTC+2 in summer.
        pytest.param(
            utc(2025, 1, 15, 6),
            w("09:00", "17:00"),
            "Europe/Paris",
            utc(2025, 1, 15, 8),
            id="paris-winter",
        ),
        pytest.param(
            utc(2025, 7, 15, 6),
            w("09:00", "17:00"),
            "Europe/Paris",
            utc(2025, 7, 15, 7),
            id="paris-summer",
        ),
        pytest.param(
            utc(2025, 7, 15, 15, 30),
            w("09:00", "17:00"),
            "Europe/Paris",
            utc(2025, 7, 16, 7),
            id="paris-after-window",
        ),
        # 2026-03-29: Paris springs forward at 02:00 CET → 03:00 CEST (01:00 UTC).
        pytest.param(
            utc(2026, 3, 28, 23),
            w("02:30", "04:00"),
            "Europe/Paris",
            utc(2026, 3, 29, 1),
            id="paris-spring-forward-start-in-gap",
        ),
        pytest.param(
            utc(2026, 3, 8, 0),
            w("09:00", "17:00"),
            "America/New_York",
            utc(2026, 3, 8, 13),
            id="ny-spring-forward-day-edt",
        ),
        pytest.param(
            utc(2026, 3, 7, 12),
            w("09:00", "17:00"),
            "America/New_York",
            utc(2026, 3, 7, 14),
            id="ny-day-before-spring-forward-est",
        ),
        # 2026-03-08 02:30 does not exist in New York: the clocks jump 02:00 EST → 03:00 EDT
        # at 07:00 UTC, the first valid instant.
        pytest.param(
            utc(2026, 3, 8, 5),
            w("02:30", "05:00"),
            "America/New_York",
            utc(2026, 3, 8, 7),
            id="ny-spring-forward-start-in-gap",
        ),
        pytest.param(
            utc(2026, 3, 8, 7, 30),
            w("02:30", "05:00"),
            "America/New_York",
            utc(2026, 3, 8, 7, 30),
            id="ny-spring-forward-inside",
        ),
        pytest.param(
            utc(2026, 3, 8, 5),
            w("02:15", "02:45"),
            "America/New_York",
            utc(2026, 3, 9, 6, 15),
            id="ny-window-entirely-in-gap-moves-to-next-day",
        ),
        # 2026-11-01: New York falls back 02:00 EDT → 01:00 EST at 06:00 UTC, so 01:30
        # happens twice (05:30 and 06:30 UTC); the window is entered at the first.
        pytest.param(
            utc(2026, 11, 1, 4),
            w("01:30", "03:00"),
            "America/New_York",
            utc(2026, 11, 1, 5, 30),
            id="ny-fall-back-first-occurrence",
        ),
        pytest.param(
            utc(2026, 11, 1, 6, 15),
            w("01:30", "03:00"),
            "America/New_York",
            utc(2026, 11, 1, 6, 15),
            id="ny-fall-back-inside-repeated-hour",
        ),
        pytest.param(
            utc(2026, 11, 1, 4),
            w("01:00", "01:45"),
            "America/New_York",
            utc(2026, 11, 1, 5),
            id="ny-fall-back-window-entered-once",
        ),
        pytest.param(
            utc(2026, 11, 1, 6, 10),
            w("01:00", "01:45"),
            "America/New_York",
            utc(2026, 11, 2, 6),
            id="ny-fall-back-second-pass-not-a-window",
        ),
        pytest.param(
            utc(2026, 11, 1, 12),
            w("09:00", "17:00"),
            "America/New_York",
            utc(2026, 11, 1, 14),
            id="ny-fall-back-day-est",
        ),
        # Wrapping windows: 22:00-06:00.
        pytest.param(
            utc(2025, 1, 1, 12), w("22:00", "06:00"), "UTC", utc(2025, 1, 1, 22), id="wrap-midday"
        ),
        pytest.param(
            utc(2025, 1, 1, 23),
            w("22:00", "06:00"),
            "UTC",
            utc(2025, 1, 1, 23),
            id="wrap-late-evening",
        ),
        pytest.param(
            utc(2025, 1, 2, 3),
            w("22:00", "06:00"),
            "UTC",
            utc(2025, 1, 2, 3),
            id="wrap-early-morning-from-previous-day",
        ),
        pytest.param(
            utc(2025, 1, 2, 6),
            w("22:00", "06:00"),
            "UTC",
            utc(2025, 1, 2, 22),
            id="wrap-end-exclusive",
        ),
        pytest.param(
            utc(2025, 1, 2, 4),
            w("22:00", "06:00"),
            "Europe/Paris",
            utc(2025, 1, 2, 4),
            id="wrap-paris-inside",
        ),
        pytest.param(
            utc(2025, 1, 2, 5),
            w("22:00", "06:00"),
            "Europe/Paris",
            utc(2025, 1, 2, 21),
            id="wrap-paris-after-end",
        ),
    ],
)
def test_next_send_time(
    due: datetime, window: SendWindow | None, tz: str, expected: datetime
) -> None:
    result = next_send_time(due, window, tz)
    assert result == expected
    assert result.tzinfo is UTC


def test_next_send_time_accepts_any_aware_input() -> None:
    from zoneinfo import ZoneInfo

    due = datetime(2025, 1, 1, 4, tzinfo=ZoneInfo("Europe/Paris"))  # 03:00 UTC
    assert next_send_time(due, w("09:00", "17:00"), "UTC") == utc(2025, 1, 1, 9)


@pytest.mark.parametrize(
    ("settings", "expected_expiry", "expected_reminder"),
    [
        (DEFAULTS, NOW + 30 * DAY, None),
        (replace(DEFAULTS, reminder_after=timedelta(days=5)), NOW + 30 * DAY, NOW + 5 * DAY),
        (replace(DEFAULTS, response_window=timedelta(hours=12)), NOW + timedelta(hours=12), None),
    ],
)
def test_expiry_and_reminder(
    settings: SurveySettings, expected_expiry: datetime, expected_reminder: datetime | None
) -> None:
    assert expires_at(NOW, settings) == expected_expiry
    assert reminder_due(NOW, settings) == expected_reminder


@pytest.mark.parametrize(
    ("promoters", "passives", "detractors", "expected"),
    [
        (0, 0, 0, None),
        (1, 0, 0, 100.0),
        (0, 0, 1, -100.0),
        (0, 5, 0, 0.0),
        (5, 3, 2, 30.0),
        (1, 1, 1, 0.0),
        (2, 0, 1, 33.3),
        (1, 0, 2, -33.3),
        (2, 1, 0, 66.7),
    ],
)
def test_nps(promoters: int, passives: int, detractors: int, expected: float | None) -> None:
    assert nps(promoters, passives, detractors) == expected


@pytest.mark.parametrize(
    ("score", "expected"),
    [
        (0, "detractor"),
        (6, "detractor"),
        (7, "passive"),
        (8, "passive"),
        (9, "promoter"),
        (10, "promoter"),
    ],
)
def test_category(score: int, expected: str) -> None:
    assert category(score) == expected


@pytest.mark.parametrize("score", [-1, 11])
def test_category_rejects_out_of_range(score: int) -> None:
    with pytest.raises(ValueError, match="0 to 10"):
        category(score)


# -- added for issue 18: the cases a mutation run showed unguarded -------------------------

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
