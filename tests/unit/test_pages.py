from __future__ import annotations

import re
from datetime import UTC, datetime

from daemon.pages import render_error, render_survey, render_thanks, render_unsubscribe

XSS = "<script>alert(1)</script>"


def survey_page(**changes: object) -> str:
    values: dict[str, object] = {
        "product_name": "Acme",
        "token": "tok123",
        "selected": None,
        "comment": None,
        "answered": False,
        "expires_at": None,
    }
    values.update(changes)
    return render_survey(**values)  # type: ignore[arg-type]


def test_survey_page_question_form_and_radios() -> None:
    html = survey_page()
    assert "How likely are you to recommend Acme to a friend or colleague?" in html
    assert re.search(r'<form method="post" action="/s/tok123"[\s>]', html)
    values = re.findall(r'<input type="radio" name="score" value="(\d+)"', html)
    assert values == [str(n) for n in range(11)]
    assert " checked" not in html
    assert '<textarea id="comment" name="comment"' in html
    assert 'name="viewport"' in html
    # One script, npsd's own (same origin), and nothing fetched from elsewhere.
    assert re.findall(r"<script[^>]*>", html) == ['<script src="/assets/survey.js" defer>']
    assert "http://" not in html and "https://" not in html


def test_preselected_score_is_checked() -> None:
    html = survey_page(selected=7)
    checked = re.findall(r'value="(\d+)" required checked', html)
    assert checked == ["7"]


def test_comment_is_escaped() -> None:
    html = survey_page(comment=XSS, answered=True)
    assert XSS not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;</textarea>" in html


def test_product_name_and_token_are_escaped() -> None:
    html = survey_page(product_name=XSS, token='"><script>')
    assert "<script>" not in html
    assert 'action="/s/%22%3E%3Cscript%3E"' in html


def test_answered_shows_until_when() -> None:
    html = survey_page(answered=True, selected=9, expires_at=datetime(2025, 3, 12, 10, tzinfo=UTC))
    assert "Thanks, we have your answer: 9. You can change it until March 12, 2025." in html
    assert "You can change it" not in survey_page(answered=False)


def test_thanks_links_back() -> None:
    html = render_thanks(product_name="Acme", score=9, token="tok123")
    assert "Thank you" in html
    assert 'href="/s/tok123?score=9"' in html


def test_unsubscribe_confirm_form() -> None:
    html = render_unsubscribe(product_name="Acme", token="tok123", done=False)
    assert '<form method="post" action="/u/tok123">' in html
    assert '<input type="hidden" name="List-Unsubscribe" value="One-Click">' in html
    assert "<button" in html
    assert "You are unsubscribed" not in html


def test_unsubscribe_done() -> None:
    html = render_unsubscribe(product_name=XSS, token="tok123", done=True)
    assert "You are unsubscribed" in html
    assert "<form" not in html
    assert "<script>" not in html


def test_error_pages() -> None:
    html = render_error(status=404, title="Survey not found", detail=XSS)
    assert "<h1>Survey not found</h1>" in html
    assert "<title>Survey not found</title>" in html
    assert "<script>" not in html
    assert "This survey has closed" in render_error(
        status=410, title="This survey has closed", detail=""
    )
