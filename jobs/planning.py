"""The glue between the store's survey planning and the pure rules."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from jobs.rules import Candidate, decide_on_identify
from settings import SurveySettings
from storage.survey_plan import Plan, Planner, SurveyHistory


def candidate_from(user: dict[str, Any], *, has_pending: bool, last_survey_at: datetime | None,
                   suppressed: bool = False, address_pending: bool = False,
                   address_surveyed_at: datetime | None = None) -> Candidate:
    return Candidate(
        user_id=user["user_id"], email=user.get("email"), created_at=user.get("created_at"),
        timezone=user.get("timezone"), unsubscribed=user.get("unsubscribed_at") is not None,
        suppressed=suppressed, has_pending=has_pending, last_survey_at=last_survey_at,
        address_pending=address_pending, address_surveyed_at=address_surveyed_at,
    )


def make_planner(settings: SurveySettings) -> Planner:
    def plan(user: dict[str, Any], history: SurveyHistory, now: datetime) -> Plan:
        decision = decide_on_identify(
            candidate_from(user, has_pending=history.has_pending,
                           last_survey_at=history.last_survey_at,
                           address_pending=history.address_pending,
                           address_surveyed_at=history.address_surveyed_at), settings, now)
        return Plan(decision.action, decision.reason, decision.due_at)

    return plan
