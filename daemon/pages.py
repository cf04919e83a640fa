"""The public pages a survey recipient sees: pure functions from values to HTML strings.

Templates live in daemon/templates/ (string.Template, read through importlib.resources so
they work from an installed wheel). Every value is HTML-escaped on the way in unless it is
a `Markup` fragment built here from escaped parts, so a comment such as
`<script>alert(1)</script>` always renders as text.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from html import escape
from importlib.resources import files
from string import Template
from urllib.parse import quote

SCORES = range(11)


class Markup(str):
    """HTML that is already safe: built in this module from escaped values only."""


def render_survey(
    *,
    product_name: str,
    token: str,
    selected: int | None,
    comment: str | None,
    answered: bool,
    expires_at: datetime | None,
    notice: str | None = None,
) -> str:
    question = f"How likely are you to recommend {product_name} to a friend or colleague?"
    scores = "\n".join(
        f'<label><input type="radio" name="score" value="{n}" required'
        f"{' checked' if n == selected else ''}"
        f' aria-label="{n}{_edge(n)}"><span aria-hidden="true">{n}</span></label>'
        for n in SCORES
    )
    note = Markup("")
    if answered:
        until = f"until {_date(expires_at)}" if expires_at is not None else "at any time"
        note = Markup(
            f'<p class="note" role="status">Thanks, we have your answer. '
            f"You can change your answer {escape(until)}.</p>\n"
        )
    if notice:  # what to fix in what was sent (shown with a 400)
        note = Markup(f'{note}<p class="note" role="alert">{escape(notice)}</p>\n')
    body = _fill(
        "survey.html",
        note=note,
        action=f"/s/{quote(token, safe='')}",
        question=question,
        scores=Markup(scores),
        comment=comment or "",
        submit="Update my answer" if answered else "Send my answer",
    )
    return _page(question, body)


def render_thanks(*, product_name: str, score: int, token: str) -> str:
    body = _fill(
        "thanks.html",
        product_name=product_name,
        score=str(score),
        change_url=f"/s/{quote(token, safe='')}?score={score}",
    )
    return _page("Thank you", body)


def render_unsubscribe(*, product_name: str, token: str, done: bool) -> str:
    if done:
        body = _fill("unsubscribe_done.html", product_name=product_name)
        return _page("You are unsubscribed", body)
    body = _fill(
        "unsubscribe.html", product_name=product_name, action=f"/u/{quote(token, safe='')}"
    )
    return _page("Unsubscribe", body)


def render_error(*, status: int, title: str, detail: str) -> str:
    return _page(title, _fill("error.html", status=str(status), title=title, detail=detail))


def _page(title: str, body: Markup) -> str:
    return str(_fill("layout.html", title=title, body=body))


def _fill(name: str, **values: str) -> Markup:
    safe = {k: v if isinstance(v, Markup) else escape(v, quote=True) for k, v in values.items()}
    return Markup(_template(name).substitute(safe))


@functools.cache
def _template(name: str) -> Template:
    return Template(files("daemon.templates").joinpath(name).read_text(encoding="utf-8"))


def _edge(score: int) -> str:
    return {0: ", not at all likely", 10: ", extremely likely"}.get(score, "")


def _date(when: datetime) -> str:
    """ "12 March 2025": unambiguous in every locale, and the page is not localised."""
    day = when.astimezone(UTC) if when.tzinfo is not None else when
    return f"{day.day} {day:%B %Y}"
