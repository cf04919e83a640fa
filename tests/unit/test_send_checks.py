"""jobs/send_checks.py: the checks a claimed survey passes at the moment of sending, by a
table of cases (no database, no SMTP)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time
from typing import Any

import pytest

from jobs.send_checks import check_at_send
from settings import SendWindow, SurveySettings
from storage.states import SurveyState
from storage.surveys import Claimed

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a Monday, 10:00 UTC
S = SurveySettings()


def user(**changes: Any) -> dict[str, Any]:
    return {"user_id": "u1", "email": "u1@example.com", "created_at": None, "timezone": None,
            "unsubscribed_at": None, **changes}


def claim(*, the_user: dict[str, Any] | None = None, missing: bool = False,
          suppressed: bool = False, reminder: bool = False,
          accounts: tuple[str, ...] = ()) -> Claimed:
    return Claimed(7, "u1", "tok", 0, reminder, None if missing else (the_user or user()),
                   suppressed, accounts)


@pytest.mark.parametrize(("c", "s", "caps", "state", "reason"), [
    (claim(), S, {}, None, None),
    (claim(missing=True), S, {}, SurveyState.SKIPPED, "skipped: the user no longer exists"),
    (claim(suppressed=True), S, {}, SurveyState.SKIPPED, "skipped at dispatch:"),
    (claim(the_user=user(unsubscribed_at=NOW)), S, {}, SurveyState.SKIPPED,
     "skipped at dispatch:"),
    (claim(the_user=user(email=None)), S, {}, SurveyState.SKIPPED, "skipped at dispatch:"),
    # A reminder skips the sample, window and cap checks: its survey passed them.
    (claim(reminder=True), replace(S, sample_rate=0.0), {}, None, None),
    (claim(), replace(S, sample_rate=0.0), {}, SurveyState.SKIPPED,
     "skipped: not in the sample (sample_rate 0.0)"),
    (claim(), replace(S, send_window=SendWindow(time(9), time(17))), {}, None, None),
    (claim(), replace(S, send_window=SendWindow(time(14), time(17))), {}, SurveyState.PENDING,
     "deferred to 2026-03-02T14:00:00Z: outside the send window 14:00-17:00 (UTC)"),
    (claim(accounts=("acme",)), replace(S, max_per_account=2), {"acme": 1}, None, None),
    (claim(accounts=("acme",)), replace(S, max_per_account=2), {"acme": 2},
     SurveyState.SKIPPED,
     "skipped: account acme already had 2 surveys in the interval (max_per_account 2)"),
])
def test_check_at_send(c: Claimed, s: SurveySettings, caps: dict[str, int],
                       state: SurveyState | None, reason: str | None) -> None:
    outcome = check_at_send(c, s, NOW, caps)
    if state is None:
        assert outcome is None
        return
    assert outcome is not None and outcome.state == state
    assert reason is not None and outcome.reason.startswith(reason), outcome.reason
    assert outcome.survey_id == 7 and outcome.reminder == c.reminder


def test_a_survey_let_through_counts_against_its_accounts_caps() -> None:
    caps: dict[str, int] = {"acme": 1}
    s = replace(S, max_per_account=2)
    assert check_at_send(claim(accounts=("acme", "beta")), s, NOW, caps) is None
    assert caps == {"acme": 2, "beta": 1}
    assert check_at_send(claim(accounts=("acme",)), s, NOW, caps) is not None
    assert caps == {"acme": 2, "beta": 1}


def test_deferral_carries_the_time_the_window_opens() -> None:
    s = replace(S, send_window=SendWindow(time(14), time(17)))
    outcome = check_at_send(claim(), s, NOW, {})
    assert outcome is not None and outcome.due_at == datetime(2026, 3, 2, 14, 0, tzinfo=UTC)
