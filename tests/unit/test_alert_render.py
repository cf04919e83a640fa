"""A detractor alert as Slack and an email show it: the customer's comment is text (escaped
for Slack's mrkdwn and for HTML), and the link leads to their console page."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from jobs.alerts import Alert, alert_email, slack_body
from jobs.loop_events import answer_data
from storage.deliveries import AnswerFacts
from tests.mail import read_mail

AT = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
COMMENT = "Export <b>fails</b> & support is slow\n<!channel> please"


def facts(**changes: object) -> AnswerFacts:
    base = dict(survey_id=7, user_id="user 42/x", email="ann@example.com", name="Ann Lee",
                accounts=(("acc-1", "Initech"), ("acc-2", None)), score=3, previous_score=None,
                comment=COMMENT, revision=1, answered_at=AT)
    base.update(changes)
    return AnswerFacts(**base)  # type: ignore[arg-type]


def alert(**changes: object) -> Alert:
    return Alert.of(json.dumps(answer_data(facts(**changes))), "https://nps.acme.example/")


def test_slack_text_escapes_the_comment_and_links_the_console() -> None:
    body = json.loads(slack_body(alert()))
    assert list(body) == ["text"]
    text = body["text"]
    assert text.startswith("*NPS alert: 3/10 from Ann Lee* (detractor)")
    assert "> Export &lt;b&gt;fails&lt;/b&gt; &amp; support is slow" in text
    assert "> &lt;!channel&gt; please" in text and "<!channel>" not in text  # no @channel
    assert "Account: Initech (acc-1), acc-2" in text and "Email: ann@example.com" in text
    assert text.endswith("<https://nps.acme.example/console/users/user%2042%2Fx|Open Ann Lee "
                         "in npsd>")


def test_slack_without_comment_or_name() -> None:
    text = json.loads(slack_body(alert(comment=None, name=None, revision=2)))["text"]
    assert text.startswith("*NPS alert: 3/10 (revised) from ann@example.com*")
    assert "_(no comment)_" in text


def test_email_has_both_parts_the_comment_escaped_in_html() -> None:
    message = alert_email(alert(), "Acme NPS <nps@acme.example>", ("cs@acme.example",), AT)
    parsed = read_mail(message)
    assert parsed["Subject"] == "NPS alert: 3/10 from Ann Lee"
    assert parsed["To"] == "cs@acme.example" and message.recipients == ("cs@acme.example",)
    assert message.sender == "nps@acme.example" and message.alert and message.survey_id == 7
    assert parsed["Message-ID"].endswith("@acme.example>")
    plain = parsed.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = parsed.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "Ann Lee answered 3 out of 10 (detractor)." in plain
    assert "  Export <b>fails</b> & support is slow" in plain  # plain text: as typed
    assert "Follow up: https://nps.acme.example/console/users/user%2042%2Fx" in plain
    assert "Export &lt;b&gt;fails&lt;/b&gt; &amp; support is slow" in html
    assert "<b>fails</b>" not in html
    assert 'href="https://nps.acme.example/console/users/user%2042%2Fx"' in html
