"""What an answer, an unsubscribe or an erasure sends, from the settings of the moment:
the storage.deliveries.LoopPolicy the daemon hands to the store, which writes the rows in
the transaction of the event.

Webhook bodies are Standard Webhooks payloads (`type`, `timestamp`, `data`), serialised once
here: the bytes stored are the bytes signed and sent on every attempt. One event has one
webhook-id for all its URLs. An alert stores its facts; jobs/alerts.py renders them for
Slack and for email at delivery time."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from jobs.loop_rules import category, raises_alert
from settings import AlertSettings, WebhookSettings
from storage.deliveries import AnswerFacts, NewDelivery

WEBHOOK, SLACK, EMAIL = "webhook", "slack", "email"
ALERT = "alert"


def new_webhook_id() -> str:
    """`msg_` and 128 random bits: unique, and never a "." (it is part of what is signed)."""
    return f"msg_{secrets.token_hex(16)}"


def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def payload(event: str, at: datetime, data: dict[str, Any]) -> str:
    """The body of one webhook, minified (what is signed is exactly what is sent)."""
    return json.dumps({"type": event, "timestamp": iso(at), "data": data},
                      separators=(",", ":"), ensure_ascii=False)


def answer_data(f: AnswerFacts) -> dict[str, Any]:
    return {
        "surveyId": f.survey_id, "userId": f.user_id, "email": f.email, "name": f.name,
        "score": f.score, "category": category(f.score), "comment": f.comment or "",
        "answeredAt": iso(f.answered_at), "revision": f.revision,
        "previousScore": f.previous_score,
        "accounts": [{"groupId": g, "name": n} for g, n in f.accounts],
    }


@dataclass(frozen=True)
class LoopEvents:
    alerts: AlertSettings
    webhooks: WebhookSettings

    @property
    def active(self) -> bool:
        return self.alerts.enabled or self.webhooks.enabled

    def _hooks(self, event: str, at: datetime, data: dict[str, Any], user_id: str | None,
               survey_id: int | None = None) -> list[NewDelivery]:
        if not self.webhooks.enabled:
            return []
        body, webhook_id = payload(event, at, data), new_webhook_id()
        return [NewDelivery(webhook_id, WEBHOOK, url, event, body, user_id, survey_id)
                for url in self.webhooks.urls]

    def on_answer(self, facts: AnswerFacts) -> list[NewDelivery]:
        rows = self._hooks("survey.answered", facts.answered_at, answer_data(facts),
                           facts.user_id, facts.survey_id)
        a = self.alerts
        if a.enabled and raises_alert(facts.score, facts.previous_score, a.detractor_below):
            body = json.dumps(answer_data(facts), separators=(",", ":"), ensure_ascii=False)
            alert_id = new_webhook_id()
            # The target is resolved when sending (`receiver`): alerts go where the config
            # says then, and the Slack URL, a credential, is not copied into the database.
            if a.email_to:
                rows.append(NewDelivery(alert_id, EMAIL, EMAIL, ALERT, body, facts.user_id,
                                        facts.survey_id))
            if a.slack_webhook_url:
                rows.append(NewDelivery(alert_id, SLACK, SLACK, ALERT, body, facts.user_id,
                                        facts.survey_id))
        return rows

    def on_unsubscribe(self, user_id: str, email: str | None,
                       at: datetime) -> list[NewDelivery]:
        return self._hooks("user.unsubscribed", at,
                           {"userId": user_id, "email": email, "unsubscribedAt": iso(at)},
                           user_id)

    def on_erasure(self, user_ids: list[str], at: datetime) -> list[NewDelivery]:
        # user_id None: the erasure that writes these must not find them (storage.personal_data).
        return [row for u in user_ids for row in self._hooks("user.erased", at,
                                                             {"userId": u}, None)]


def receiver(channel: str, target: str, alerts: AlertSettings,
             webhooks: WebhookSettings) -> str | None:
    """Where a delivery goes now: its webhook URL while still listed, the Slack URL or the
    alert addresses (comma-separated) as configured now. None when the receiver was taken
    out of the config (and reloaded): the delivery is dropped, not sent."""
    if channel == WEBHOOK:
        return target if target in webhooks.urls else None
    if channel == SLACK:
        return alerts.slack_webhook_url or None
    return ",".join(alerts.email_to) or None
