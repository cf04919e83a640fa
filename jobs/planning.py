"""The glue between the store's survey planning and the pure rules.

The planner decides for identified users (Callexa's rules) and for users whose track named
one of `survey.trigger_events`; it is rebuilt from the live settings for every commit, so a
SIGHUP reload changes both at once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jobs.rules import Candidate, decide_on_event, decide_on_identify
from settings import SurveySettings
from storage.survey_plan import Plan, SurveyHistory, Trigger


def candidate_from(user: dict[str, Any], *, has_pending: bool, last_survey_at: datetime | None,
                   suppressed: bool = False, address_pending: bool = False,
                   address_surveyed_at: datetime | None = None) -> Candidate:
    return Candidate(
        user_id=user["user_id"], email=user.get("email"), created_at=user.get("created_at"),
        timezone=user.get("timezone"), unsubscribed=user.get("unsubscribed_at") is not None,
        suppressed=suppressed, has_pending=has_pending, last_survey_at=last_survey_at,
        address_pending=address_pending, address_surveyed_at=address_surveyed_at,
    )


@dataclass(frozen=True)
class SurveyPlanner:
    settings: SurveySettings

    @property
    def trigger_events(self) -> frozenset[str]:
        return frozenset(self.settings.trigger_events)

    def __call__(self, user: dict[str, Any], history: SurveyHistory, now: datetime, *,
                 identified: bool = True, trigger: Trigger | None = None) -> Plan:
        c = candidate_from(user, has_pending=history.has_pending,
                           last_survey_at=history.last_survey_at,
                           address_pending=history.address_pending,
                           address_surveyed_at=history.address_surveyed_at)
        decision = decide_on_identify(c, self.settings, now) if identified else None
        if trigger is not None and (decision is None or decision.action != "schedule"):
            # The identify did not schedule (say: older than max_delay): the event may.
            decision = decide_on_event(c, self.settings, now, trigger[0], trigger[1])
        assert decision is not None
        return Plan(decision.action, decision.reason, decision.due_at)


def make_planner(settings: SurveySettings) -> SurveyPlanner:
    return SurveyPlanner(settings)
