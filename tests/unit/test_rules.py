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
