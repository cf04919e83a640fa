"""The pages a customer sees: the survey (GET shows, POST records) and the unsubscribe.

GET never records anything: mail scanners and link previews fetch every URL in an email."""

from __future__ import annotations

import codecs
from urllib.parse import parse_qsl

import structlog
from aiohttp import web

import daemon.pages as pages
from daemon.bodies import check_declared_length, discard_body, read_body
from daemon.http_util import BodyError
from daemon.pages import MAX_COMMENT
from daemon.runtime import RUNTIME
from jobs.i18n import Texts, from_accept_language, negotiate, texts_in
from storage.answers import SurveyView
from storage.db import StoreUnavailable
from storage.states import AnswerResult, Openness, SurveyState

log = structlog.get_logger("npsd.survey")

# The survey form is a score and a comment of at most MAX_COMMENT characters: 64 KB is
# room for that in any encoding, and a bound on what a stranger can make npsd hold.
PAGE_BODY_LIMIT = 64 * 1024
FORM_TYPE = "application/x-www-form-urlencoded"
MAX_FIELDS = 20  # the form has two
_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",  # the token is in the URL
    # The one script is npsd's own (/assets/survey.js); it may POST only to npsd.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                               "script-src 'self'; connect-src 'self'; "
                               "form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
}


def _html(body: str, status: int = 200) -> web.Response:
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8",
                        headers=_HEADERS)


def _texts(request: web.Request, survey: SurveyView | None = None) -> Texts:
    """The recipient's language; with no survey (unknown token), the browser's."""
    s = request.app[RUNTIME].settings.survey
    if survey is not None:
        return texts_in(negotiate(survey.locale, s.default_locale), s.texts)
    lang = from_accept_language(request.headers.get("Accept-Language"), s.default_locale)
    return texts_in(lang, s.texts)


def _product(request: web.Request) -> str:
    return request.app[RUNTIME].settings.survey.product_name


def _not_found(request: web.Request) -> web.Response:
    return _html(pages.render_text_error(404, "not_found", _texts(request), _product(request)),
                 404)


def _closed(request: web.Request, survey: SurveyView) -> web.Response:
    return _html(pages.render_text_error(410, "closed", _texts(request, survey),
                                         _product(request)), 410)


def _unavailable(request: web.Request) -> web.Response:
    return _html(pages.render_text_error(503, "unavailable", _texts(request),
                                         _product(request)), 503)


def _clean(text: str) -> str:
    """Free text as the database and any reader can hold it: no NUL, no lone surrogates,
    and LF line ends (browsers send CRLF, but count a line end as one against maxlength)."""
    text = text.replace("\x00", "").replace("\r\n", "\n")
    text = text.encode("utf-8", "replace").decode("utf-8")
    return text.strip()


def _score(text: str | None) -> int | None:
    # ASCII digits only: str.isdigit() is also true for "²" or "٣", which int() refuses.
    digits = text.strip() if text is not None else ""
    if not digits or len(digits) > 2 or not digits.isascii() or not digits.isdigit():
        return None
    value = int(digits)
    return value if 0 <= value <= 10 else None


def _body_refused(exc: BodyError) -> web.Response:
    """A page saying what was wrong with what the browser (or a script) sent."""
    titles = {408: "The form took too long to arrive", 413: "The form is too large",
              415: "The form could not be read"}
    response = _html(pages.render_error(
        status=exc.status, title=titles.get(exc.status, "The form could not be read"),
        detail=f"{exc.message}. Go back to the survey page and send the form again."),
        exc.status)
    if exc.close:
        response.force_close()
    return response


async def _read_form(request: web.Request) -> dict[str, str]:
    """The urlencoded survey form, within PAGE_BODY_LIMIT; BodyError says what to fix."""
    runtime = request.app[RUNTIME]
    body = await read_body(request, PAGE_BODY_LIMIT,
                           runtime.settings.server.body_timeout.total_seconds())
    content_type = request.content_type.lower()
    if body and content_type not in (FORM_TYPE, "application/octet-stream"):
        raise BodyError(415, f"the form must be sent as {FORM_TYPE}, not {content_type[:60]}")
    charset = request.charset or "utf-8"
    try:
        known = codecs.lookup(charset)._is_text_encoding  # not base64, zlib, rot13...
    except LookupError:
        known = False
    if not known:
        raise BodyError(400, f"unknown charset {charset[:40]!r} (send UTF-8)")
    if body.count(b"&") >= MAX_FIELDS:
        raise BodyError(400, "the form has too many fields")
    try:
        pairs = parse_qsl(body.decode("ascii", "replace"), keep_blank_values=True,
                          encoding=charset, errors="replace")
    except (LookupError, ValueError):
        raise BodyError(400, f"the form cannot be read as {charset[:40]} (send UTF-8)"
                        ) from None
    return dict(pairs)


async def script(request: web.Request) -> web.Response:
    return web.Response(body=pages.script(), content_type="text/javascript", charset="utf-8",
                        headers={"Cache-Control": "public, max-age=3600",
                                 "X-Content-Type-Options": "nosniff"})


def _page(request: web.Request, survey: SurveyView, *, selected: int | None,
          comment: str | None, errors: tuple[str, ...] = (), record: bool = False) -> str:
    """The survey page; once answered it shows the saved answer, whatever the link says."""
    answered = survey.state == SurveyState.ANSWERED
    return pages.render_survey(
        product_name=_product(request), token=request.match_info["token"],
        selected=survey.score if answered else selected, comment=comment,
        answered=answered, expires_at=survey.expires_at, t=_texts(request, survey),
        first_name=survey.first_name, record=record, errors=errors)


async def show_survey(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    try:
        survey = await runtime.store.survey(request.match_info["token"])
    except StoreUnavailable:
        return _unavailable(request)
    shown = Openness.UNKNOWN if survey is None else survey.openness(runtime.clock.now())
    if survey is None or shown is Openness.UNKNOWN:
        return _not_found(request)
    if shown is Openness.CLOSED:
        return _closed(request, survey)
    given = request.query.get("score")
    selected = _score(given)
    # A score in the link that is not 0-10 (a mangled link, "?score=²"): the survey with
    # nothing chosen and a line saying so, as a 400.
    bad = given is not None and selected is None
    t = _texts(request, survey)
    errors = (t("missing_score", product=_product(request)),) if bad else ()
    # GET records nothing: with record_on_click the page's script POSTs the score.
    record = runtime.settings.survey.record_on_click and given is not None
    page = _page(request, survey, selected=selected, comment=survey.comment, errors=errors,
                 record=record and not bad)
    return _html(page, 400 if bad else 200)


def _json(status: int, **body: object) -> web.Response:
    return web.json_response(body, status=status, headers={"Cache-Control": "no-store"})


async def _record_click(request: web.Request, survey: SurveyView,
                        score: int | None) -> web.Response:
    """The script's POST on load (record_on_click): the score alone, the comment kept."""
    runtime = request.app[RUNTIME]
    if not runtime.settings.survey.record_on_click:
        return _json(403, message="survey.record_on_click is off: press Send to answer")
    if score is None:
        return _json(400, message="score must be a whole number from 0 to 10")
    if survey.state == SurveyState.ANSWERED:
        return _json(409, message="already answered: the saved answer is kept")
    token = request.match_info["token"]
    if await runtime.store.answer(token, score, survey.comment, runtime.clock.now(),
                                  runtime.loop()) is not AnswerResult.RECORDED:
        return _json(410, message="this survey has closed")
    runtime.metrics.answers.inc()
    log.info("survey.answered", survey_id=survey.id, score=score,
             has_comment=bool(survey.comment), source="click")
    return _json(200, saved=True, score=score)


async def answer_survey(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    token = request.match_info["token"]
    try:
        survey = await runtime.store.survey(token)
        if survey is None or survey.openness(runtime.clock.now()) is Openness.UNKNOWN:
            return _not_found(request)
        check_declared_length(request, PAGE_BODY_LIMIT)
        now = runtime.clock.now()
        if survey.openness(now) is Openness.CLOSED:
            return _closed(request, survey)
        form = await _read_form(request)  # read only for a known token
        score = _score(form.get("score"))
        if form.get("source") == "click":
            return await _record_click(request, survey, score)
        raw_comment = form.get("comment")
        comment = _clean(raw_comment) if raw_comment is not None else ""
        t = _texts(request, survey)
        errors = []
        if score is None:
            errors.append(t("missing_score", product=_product(request)))
        if len(comment) > MAX_COMMENT:
            errors.append(t("comment_too_long", count=t.number(len(comment)),
                            limit=t.number(MAX_COMMENT), product=_product(request)))
        if errors:  # the page again, with what was typed and what to fix
            page = pages.render_survey(
                product_name=_product(request), token=token, selected=score,
                comment=comment or survey.comment, answered=False,
                expires_at=survey.expires_at, t=t, first_name=survey.first_name,
                errors=tuple(errors))
            return _html(page, 400)
        assert score is not None
        result = await runtime.store.answer(token, score, comment or None, now, runtime.loop())
        if result is not AnswerResult.RECORDED:
            return _closed(request, survey)
    except StoreUnavailable:
        return _unavailable(request)
    except BodyError as exc:
        return _body_refused(exc)
    runtime.metrics.answers.inc()
    log.info("survey.answered", survey_id=survey.id, score=score, has_comment=bool(comment))
    return _html(pages.render_thanks(product_name=_product(request), score=score, token=token,
                                     t=_texts(request, survey), first_name=survey.first_name))


async def show_unsubscribe(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    try:
        survey = await runtime.store.survey(request.match_info["token"])
    except StoreUnavailable:
        return _unavailable(request)
    if survey is None:
        return _not_found(request)
    return _html(pages.render_unsubscribe(product_name=_product(request),
                                          token=request.match_info["token"],
                                          done=survey.unsubscribed, t=_texts(request, survey),
                                          first_name=survey.first_name))


async def unsubscribe(request: web.Request) -> web.Response:
    """RFC 8058 one-click: any POST to the link unsubscribes, whatever the body says."""
    runtime = request.app[RUNTIME]
    try:
        survey = await runtime.store.survey(request.match_info["token"])
        if survey is None:
            return _not_found(request)
        check_declared_length(request, PAGE_BODY_LIMIT)
        await discard_body(request, PAGE_BODY_LIMIT,
                           runtime.settings.server.body_timeout.total_seconds())
        changed = await runtime.store.unsubscribe(survey.user_id, runtime.clock.now(),
                                                  runtime.loop())
    except StoreUnavailable:
        return _unavailable(request)
    except BodyError as exc:
        return _body_refused(exc)
    if changed:
        log.info("survey.unsubscribed", survey_id=survey.id)
    return _html(pages.render_unsubscribe(product_name=_product(request),
                                          token=request.match_info["token"], done=True,
                                          t=_texts(request, survey),
                                          first_name=survey.first_name))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/assets/survey.js", script)
    app.router.add_get("/s/{token}", show_survey)
    app.router.add_post("/s/{token}", answer_survey)
    app.router.add_get("/u/{token}", show_unsubscribe)
    app.router.add_post("/u/{token}", unsubscribe)
