"""The public pages a survey recipient sees, in the recipient's language: pure functions from
values to HTML strings.

Templates live in daemon/templates/ (Jinja2, one base layout the console can extend, read
through the package loader so they work from an installed wheel). Autoescaping is on for
every template, so a comment such as `<script>alert(1)</script>` always renders as text.
Texts come from jobs.i18n (gettext catalogs plus the operator's overrides); the i18n
extension is installed with the same catalog, so templates may also use gettext directly.
"""

from __future__ import annotations

import functools
from datetime import datetime
from importlib.resources import files
from urllib.parse import quote

import jinja2

from jobs.i18n import Texts, catalog, texts_in

SCORES = range(11)
MAX_COMMENT = 5000


@functools.cache
def _env(lang: str) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("daemon", "templates"),
        autoescape=True, extensions=["jinja2.ext.i18n"], trim_blocks=False,
        undefined=jinja2.StrictUndefined)
    env.install_gettext_translations(catalog(lang), newstyle=True)  # type: ignore[attr-defined]
    return env


def _render(name: str, t: Texts, **values: object) -> str:
    return _env(t.lang).get_template(name).render(t=t, **values)


@functools.cache
def script() -> bytes:
    """The page's same-origin script (progressive enhancement, record_on_click)."""
    return files("daemon.templates").joinpath("survey.js").read_bytes()


def render_survey(
    *,
    product_name: str,
    token: str,
    selected: int | None,
    comment: str | None,
    answered: bool,
    expires_at: datetime | None,
    notice: str | None = None,
    t: Texts | None = None,
    first_name: str | None = None,
    record: bool = False,
    errors: tuple[str, ...] = (),
) -> str:
    """The question with `selected` checked. When answered, `selected` is the saved score; a
    score not yet saved is said to be so; `record` asks the script to save it on load."""
    t = t or texts_in("en")
    p = {"product": product_name, "first_name": first_name or ""}
    low, high = t("low_label", **p), t("high_label", **p)
    labels = {n: t("score_label", score=n, **p) + {0: f", {low}", 10: f", {high}"}.get(n, "")
              for n in SCORES}
    note = ""
    if answered and selected is not None:
        note = (t("answered", score=selected, date=t.date(expires_at), **p)
                if expires_at is not None else t("answered_no_date", score=selected, **p))
    pending = ""
    if selected is not None and not answered:
        pending = t("not_saved", score=selected, **p)
    return _render(
        "survey.html", t, question=t("question", **p), answered=note,
        errors=(*errors, *((notice,) if notice else ())), action=f"/s/{quote(token, safe='')}",
        scores=SCORES, selected=selected, labels=labels, low=low, high=high, pending=pending,
        not_saved_template=t("not_saved", score="{score}", **p),
        saved_template=t("saved_on_click", score="{score}", **p),
        record=record and selected is not None and not answered,
        comment_prompt=t("comment_prompt", **p), optional=t("optional", **p),
        comment=comment or "", limit=MAX_COMMENT,
        count_template=t("comment_left", count="{count}", **p),
        submit=t("update" if answered else "submit", **p))


def render_thanks(*, product_name: str, score: int, token: str, t: Texts | None = None,
                  first_name: str | None = None) -> str:
    t = t or texts_in("en")
    p = {"product": product_name, "first_name": first_name or ""}
    return _render("thanks.html", t, title=t("thanks_title", **p),
                   text=t("thanks", score=score, **p), change=t("change_answer", **p),
                   change_url=f"/s/{quote(token, safe='')}?score={score}")


def render_unsubscribe(*, product_name: str, token: str, done: bool, t: Texts | None = None,
                       first_name: str | None = None) -> str:
    t = t or texts_in("en")
    p = {"product": product_name, "first_name": first_name or ""}
    if done:
        return _render("unsubscribe.html", t, title=t("unsubscribed_title", **p),
                       text=t("unsubscribed_text", **p), action="", button="")
    return _render("unsubscribe.html", t, title=t("unsubscribe_title", **p),
                   text=t("unsubscribe_text", **p), action=f"/u/{quote(token, safe='')}",
                   button=t("unsubscribe_button", **p))


def render_error(*, status: int, title: str, detail: str, t: Texts | None = None) -> str:
    t = t or texts_in("en")
    return _render("error.html", t, title=title, detail=detail,
                   code=t("error_code", status=status))


def render_text_error(status: int, key: str, t: Texts, product_name: str = "") -> str:
    """An error page from its texts: `<key>_title` and `<key>_text`."""
    p = {"product": product_name, "first_name": ""}
    return render_error(status=status, title=t(f"{key}_title", **p),
                        detail=t(f"{key}_text", **p), t=t)
