"""Table tests for the event rule (jobs.rules.decide_on_event, survey.trigger_events): a
listed track makes the user a candidate as an identify with max_delay = 0 does, due at the
event's time + min_delay, with every other rule alike and the event named in the reason."""

from __future__ import annotations

from dataclasses import replace
from datetime import time, timedelta

import pytest

from daemon.config import SendWindow, SurveySettings
from jobs.planning import SurveyPlanner
from jobs.rules import Decision, decide_on_event
from storage.survey_plan import SurveyHistory
from tests.unit.test_rules import DAY, NOW, candidate, schedule, skip

EV = "Order Completed"
S = SurveySettings(trigger_events=(EV,))
Q = f'"{EV}"'


@pytest.mark.parametrize(
    ("c", "settings", "at", "expected"),
    [
        pytest.param(candidate(), S, NOW, schedule(NOW + 3 * DAY, f"{Q}+3d"), id="due-at-event+3d"),
        pytest.param(candidate(), S, NOW - DAY, schedule(NOW + 2 * DAY, f"{Q}+3d"),
                     id="event-a-day-old"),
        pytest.param(candidate(), S, NOW - 5 * DAY,
                     schedule(NOW, f"{Q}+3d had passed, so at once"), id="delay-passed"),
        pytest.param(candidate(), S, NOW + 10 * DAY, schedule(NOW + 3 * DAY, f"{Q}+3d"),
                     id="future-event-clamped-to-now"),
        pytest.param(candidate(created_at=NOW - 400 * DAY), S, NOW,
                     schedule(NOW + 3 * DAY, f"{Q}+3d"), id="older-than-max-delay-still-asked"),
        pytest.param(candidate(email=None), S, NOW, skip(f"{Q}: no email trait"), id="no-email"),
        pytest.param(candidate(unsubscribed=True), S, NOW, skip(f"{Q}: unsubscribed"),
                     id="unsubscribed"),
        pytest.param(candidate(suppressed=True), S, NOW, skip(f"{Q}: suppressed"),
                     id="suppressed"),
        pytest.param(candidate(has_pending=True), S, NOW,
                     skip(f"{Q}: a survey is already pending"), id="pending"),
        pytest.param(candidate(address_pending=True), S, NOW,
                     skip(f"{Q}: a survey to this address is already pending under another "
                          "user id"), id="address-pending"),
        pytest.param(candidate(), replace(S, sample_rate=0.0), NOW,
                     skip(f"{Q}: not in the sample (sample_rate 0)"), id="sampled-out"),
        pytest.param(candidate(last_survey_at=NOW - 10 * DAY), S, NOW,
                     schedule(NOW - 10 * DAY + timedelta(weeks=26),
                              f"{Q}: re-survey when the 26w interval ends"),
                     id="once-per-interval"),
        pytest.param(candidate(last_survey_at=NOW - 200 * DAY), S, NOW,
                     schedule(NOW + 3 * DAY, f"{Q}+3d"), id="interval-over"),
        pytest.param(candidate(address_surveyed_at=NOW - 10 * DAY), S, NOW,
                     schedule(NOW - 10 * DAY + timedelta(weeks=26),
                              f"{Q}: deferred: this address was surveyed on "
                              "2024-12-22T12:00:00Z under another user id "
                              "(one survey per address per 26w)"),
                     id="one-survey-per-address"),
    ],
)
def test_decide_on_event(c: object, settings: SurveySettings, at: object,
                         expected: Decision) -> None:
    assert decide_on_event(c, settings, NOW, EV, at) == expected  # type: ignore[arg-type]


def test_send_window_moves_the_event_survey() -> None:
    window = replace(S, send_window=SendWindow(time(9), time(17)))
    decision = decide_on_event(candidate(), window, NOW.replace(hour=20), EV, NOW.replace(hour=20))
    assert decision.due_at == (NOW + 4 * DAY).replace(hour=9)
    assert decision.reason.endswith(f"{Q}+3d, moved into the 09:00-17:00 send window (UTC)")


def test_planner_identify_first_then_event() -> None:
    planner = SurveyPlanner(S)
    user = {"user_id": "u1", "email": "a@example.com", "created_at": NOW - 400 * DAY}
    none = SurveyHistory(False, None)
    assert planner(user, none, NOW).reason.startswith("skipped: older than max_delay")
    plan = planner(user, none, NOW, identified=True, trigger=(EV, NOW))
    assert plan.action == "schedule" and EV in plan.reason
    plan = planner(user, none, NOW, identified=False, trigger=(EV, NOW - DAY))
    assert plan.due_at == NOW + 2 * DAY
    assert planner.trigger_events == frozenset({EV})
