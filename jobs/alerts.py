"""A detractor alert, rendered from its stored facts (jobs/loop_events.answer_data): the
Slack incoming-webhook JSON `{"text": …}` and the email to `alerts.email_to`. Pure: no I/O,
so both are tested by value. The comment is the customer's own text: escaped for Slack's
mrkdwn (&, <, >) and for HTML, never interpreted."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP, SMTPUTF8
from email.utils import format_datetime, parseaddr
from html import escape
from typing import Any
from urllib.parse import quote

from jobs.email_message import RenderedEmail, sender_domain


@dataclass(frozen=True)
class Alert:
    survey_id: int
    user_id: str
    who: str  # the name, else the email, else the user id
    email: str | None
    score: int
    category: str
    comment: str
    accounts: str  # "Acme (acc-1), Globex (acc-2)", or ""
    answered_at: str
    revision: int
    link: str  # {public_url}/console/users/{userId}

    @classmethod
    def of(cls, body: str, public_url: str) -> Alert:
        d: dict[str, Any] = json.loads(body)
        names = [f"{a['name']} ({a['groupId']})" if a.get("name") else str(a["groupId"])
                 for a in d.get("accounts", [])]
        user_id = str(d["userId"])
        return cls(int(d["surveyId"]), user_id, d.get("name") or d.get("email") or user_id,
                   d.get("email"), int(d["score"]), str(d["category"]), d.get("comment") or "",
                   ", ".join(names), str(d["answeredAt"]), int(d.get("revision", 1)),
                   f"{public_url.rstrip('/')}/console/users/{quote(user_id, safe='')}")

    @property
    def headline(self) -> str:
        revised = " (revised)" if self.revision > 1 else ""
        return f"NPS alert: {self.score}/10{revised} from {self.who}"


def _slack_escape(text: str) -> str:
    # Slack's mrkdwn: only these three are control characters; the rest shows as typed.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_body(alert: Alert) -> bytes:
    """Slack-compatible incoming-webhook JSON (also Mattermost, Rocket.Chat, Teams' Slack
    connector): `text` with a link to the customer's console page."""
    lines = [f"*{_slack_escape(alert.headline)}* ({alert.category})"]
    if alert.email and alert.email != alert.who:
        lines.append(f"Email: {_slack_escape(alert.email)}")
    if alert.accounts:
        lines.append(f"Account: {_slack_escape(alert.accounts)}")
    if alert.comment:
        lines += ["> " + _slack_escape(line) for line in alert.comment.splitlines() or [""]]
    else:
        lines.append("_(no comment)_")
    lines.append(f"<{alert.link}|Open {_slack_escape(alert.who)} in npsd>")
    return json.dumps({"text": "\n".join(lines)}, ensure_ascii=False).encode()


def _plain(alert: Alert) -> str:
    lines = [f"{alert.who} answered {alert.score} out of 10 ({alert.category})"
             + (" — a revised answer." if alert.revision > 1 else "."), ""]
    if alert.email:
        lines.append(f"Email:   {alert.email}")
    lines.append(f"User id: {alert.user_id}")
    if alert.accounts:
        lines.append(f"Account: {alert.accounts}")
    lines += ["", "Comment:" if alert.comment else "No comment."]
    lines += [f"  {line}" for line in alert.comment.splitlines()]
    lines += ["", f"Follow up: {alert.link}", ""]
    return "\n".join(lines)


def _html(alert: Alert) -> str:
    e = escape
    rows = [("Email", alert.email or ""), ("User id", alert.user_id),
            ("Account", alert.accounts)]
    table = "".join(f"<tr><th align=\"left\">{k}</th><td>{e(v)}</td></tr>"
                    for k, v in rows if v)
    comment = (f"<blockquote style=\"white-space:pre-wrap\">{e(alert.comment)}</blockquote>"
               if alert.comment else "<p><em>No comment.</em></p>")
    return (f"<!doctype html><html><body><p><strong>{e(alert.who)}</strong> answered "
            f"<strong>{alert.score}</strong> out of 10 ({e(alert.category)})"
            f"{' — a revised answer' if alert.revision > 1 else ''}.</p>"
            f"<table>{table}</table>{comment}"
            f"<p><a href=\"{e(alert.link, quote=True)}\">Follow up in npsd</a></p>"
            f"</body></html>")


def alert_email(alert: Alert, sender: str, recipients: tuple[str, ...],
                now: datetime) -> RenderedEmail:
    """The alert as an email (plain text and HTML) to the team's addresses."""
    msg = EmailMessage()
    msg["Subject"] = alert.headline
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Date"] = format_datetime(now)
    mid = f"<{secrets.token_hex(16)}@{sender_domain(sender)}>"
    msg["Message-ID"] = mid
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies
    msg.set_content(_plain(alert))
    msg.add_alternative(_html(alert), subtype="html")
    utf8 = not all(a.isascii() for a in (*recipients, sender))
    data = msg.as_bytes(policy=SMTPUTF8 if utf8 else SMTP)
    return RenderedEmail(parseaddr(sender)[1], recipients, mid, data, utf8,
                         survey_id=alert.survey_id, alert=True)
