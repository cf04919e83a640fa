"""The shipped languages: Babel's negotiation, complete catalogs with the English
placeholders, and each language rendering the email and the page (with `lang`)."""

from __future__ import annotations

import re
import string
from datetime import UTC, datetime
from importlib.resources import files

import pytest
from babel.messages.pofile import read_po

from daemon.pages import render_survey, render_thanks, render_unsubscribe
from jobs.email_message import SurveyEmail, render_message
from jobs.i18n import SHIPPED, TEXTS, from_accept_language, negotiate, override_problem, texts_in
from tests.mail import read_mail

QUESTIONS = {
    "en": "How likely are you to recommend Acme to a friend or colleague?",
    "de": "Wie wahrscheinlich ist es, dass Sie Acme einem Freund oder Kollegen weiterempfehlen?",
    "fr": "Quelle est la probabilité que vous recommandiez Acme à un ami ou à un collègue\u00a0?",
    "es": "¿Qué probabilidad hay de que recomiendes Acme a un amigo o colega?",
    "nl": "Hoe waarschijnlijk is het dat je Acme aanbeveelt aan een vriend of collega?",
    "pt": "Qual é a probabilidade de você recomendar Acme a um amigo ou colega?",
    "it": "Quanto è probabile che tu consigli Acme a un amico o a un collega?",
}


@pytest.mark.parametrize(("given", "lang"), [
    ("de-CH", "de"), ("de_AT", "de"), ("pt_BR", "pt"), ("pt-PT", "pt"), ("fr", "fr"),
    ("EN-us", "en"), ("nl-BE", "nl"), ("it_IT", "it"), ("es-419", "es"),
    ("xx-YY", "default"), ("zh-Hans-CN", "default"), ("", "default"), (None, "default"),
    ("not a locale!!", "default"), ("\x00", "default"),
])
def test_negotiation(given: str | None, lang: str) -> None:
    assert negotiate(given, "default") == lang


def test_accept_language_picks_the_first_shipped() -> None:
    assert from_accept_language("ja, fr-CH;q=0.9, en;q=0.8", "en") == "fr"
    assert from_accept_language("en;q=0.1, de;q=0.5", "en") == "de"
    assert from_accept_language("ja", "it") == "it"
    assert from_accept_language(None, "nl") == "nl"


def _fields(text: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}


@pytest.mark.parametrize("lang", SHIPPED)
def test_catalog_is_complete_with_the_same_placeholders(lang: str) -> None:
    source = files("jobs.locales").joinpath(lang, "LC_MESSAGES", "npsd.po")
    with source.open("rb") as handle:
        catalog = read_po(handle, locale=lang)
    found = {m.context: m for m in catalog if m.id}
    assert set(found) == set(TEXTS)
    for key, (english, _) in TEXTS.items():
        message = found[key]
        assert message.id == english, key
        assert message.string and not message.fuzzy, (lang, key)
        assert _fields(str(message.string)) == _fields(english), (lang, key)


@pytest.mark.parametrize("lang", SHIPPED)
def test_each_language_renders_email_and_page(lang: str) -> None:
    e = SurveyEmail(survey_id=1, token="tok", to="ana@example.com", first_name="Ana", name=None,
                    product_name="Acme", public_url="https://nps.example", sender="a@b.example",
                    locale=f"{lang}-XX" if lang != "en" else "en-GB")
    mail = read_mail(render_message(e))
    subject = texts_in(lang)("subject", product="Acme")
    assert mail["Subject"] == subject
    plain = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = mail.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert QUESTIONS[lang] in plain
    assert plain.startswith(texts_in(lang)("greeting", first_name="Ana"))
    assert f'<html lang="{lang}">' in html and "Ana" in html
    page = render_survey(product_name="Acme", token="tok", selected=9, comment=None,
                         answered=False, expires_at=None, t=texts_in(lang))
    assert f'<html lang="{lang}">' in page
    assert QUESTIONS[lang].replace("'", "&#39;") in page
    assert texts_in(lang)("not_saved", score=9).replace("'", "&#39;") in page
    for other in (render_thanks(product_name="Acme", score=9, token="tok", t=texts_in(lang)),
                  render_unsubscribe(product_name="Acme", token="tok", done=False,
                                     t=texts_in(lang))):
        assert f'<html lang="{lang}">' in other


def test_dates_follow_the_locale() -> None:
    when = datetime(2026, 3, 12, 10, tzinfo=UTC)
    page = render_survey(product_name="Acme", token="t", selected=9, comment=None, answered=True,
                         expires_at=when, t=texts_in("de"))
    assert "bis zum 12. März 2026 ändern" in page
    assert "12 mars 2026" in texts_in("fr").date(when)


def test_override_wins_and_keeps_placeholders() -> None:
    t = texts_in("de", (("de", (("question", "Empfiehlst du {product} weiter, {first_name}?"),)),))
    page = render_survey(product_name="Acme", token="t", selected=None, comment=None,
                         answered=False, expires_at=None, t=t, first_name="Jo")
    assert "Empfiehlst du Acme weiter, Jo?" in page
    assert "Wie wahrscheinlich" not in page
    # An override for one language leaves the others alone.
    assert texts_in("fr", (("de", (("question", "x"),)),))("question", product="A") != "x"


@pytest.mark.parametrize(("lang", "key", "value", "reason"), [
    ("xx", "question", "Hi", "unknown language 'xx'"),
    ("de", "questoin", "Hi", "unknown key"),
    ("de", "question", "Hi {name}", "unknown placeholder {name}"),
    ("de", "question", "Hi {product", "not a valid text"),
    ("de", "question", "", "non-empty string"),
    ("de", "subject", "{score}", "unknown placeholder {score}"),
])
def test_bad_overrides(lang: str, key: str, value: str, reason: str) -> None:
    problem = override_problem(lang, key, value)
    assert problem is not None and reason in problem


def test_comment_is_escaped_in_every_language() -> None:
    for lang in SHIPPED:
        page = render_survey(product_name="<b>", token="t", selected=None,
                             comment="<script>x</script>", answered=True, expires_at=None,
                             t=texts_in(lang))
        assert "<script>x" not in page and "<b>" not in page
        assert re.findall(r"<script[^>]*>", page) == ['<script src="/assets/survey.js" defer>']


@pytest.mark.parametrize("lang", SHIPPED)
@pytest.mark.parametrize("first", ["Ana", "Zoë", "Ångström-Łukasiewicz " * 5, "", "=?x?="])
def test_cached_quoted_printable_equals_encoding_the_whole_body(lang: str, first: str) -> None:
    """The per-line cache of a non-ASCII body gives exactly what encoding it whole gives."""
    from jobs import email_message as m
    from jobs.email_message import greeting
    from jobs.i18n import texts_in as texts

    token = "Ab-_" * 8  # as long as secrets.token_urlsafe(24)
    cases = [(False, "https://nps.example/x"), (True, "https://nps.example/x"),
             (False, "https://nps.example/" + "long" * 9)]  # a soft break splits the token
    for reminder, url in cases:
        skeleton = m._skeleton("Ärzte & Co", url, reminder, lang, ())
        greet = greeting(first, None, texts(lang))
        for body, value in ((skeleton.plain, greet), (skeleton.html, m.escape(greet))):
            whole = "".join(token if p == m._TOKEN else value if p == m._GREETING else p
                            for p in body.parts)
            assert body.fill(token, value) == m._body(whole)
