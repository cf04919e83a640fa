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
from daemon.runtime import RUNTIME
from storage.db import StoreUnavailable
from storage.states import AnswerResult, Openness

log = structlog.get_logger("npsd.survey")

MAX_COMMENT = 5000
# The survey form is a score and a comment of at most MAX_COMMENT characters: 64 KB is
# room for that in any encoding, and a bound on what a stranger can make npsd hold.
PAGE_BODY_LIMIT = 64 * 1024
FORM_TYPE = "application/x-www-form-urlencoded"
MAX_FIELDS = 20  # the form has two
BAD_SCORE = "Please choose a score from 0 to 10 below, then send your answer."
_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",  # the token is in the URL
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                               "form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
}


def _html(body: str, status: int = 200) -> web.Response:
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8",
                        headers=_HEADERS)


def _not_found() -> web.Response:
    return _html(pages.render_error(status=404, title="Survey not found",
                                    detail="This link is not valid. Check that it was copied "
                                           "whole from the email."), 404)


def _closed() -> web.Response:
    return _html(pages.render_error(status=410, title="This survey has closed",
                                    detail="Thank you all the same: answers are no longer "
                                           "taken for this survey."), 410)


def _unavailable() -> web.Response:
    return _html(pages.render_error(status=503, title="Please try again in a moment",
                                    detail="We could not reach our records just now."), 503)


def _clean(text: str) -> str:
    """Free text as the database and any reader can hold it: no NUL, no lone surrogates."""
    text = text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
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


async def show_survey(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    try:
        survey = await runtime.store.survey(request.match_info["token"])
    except StoreUnavailable:
        return _unavailable()
    shown = Openness.UNKNOWN if survey is None else survey.openness(runtime.clock.now())
    if survey is None or shown is Openness.UNKNOWN:
        return _not_found()
    if shown is Openness.CLOSED:
        return _closed()
    given = request.query.get("score")
    selected = _score(given)
    # A score in the link that is not 0-10 (a mangled link, "?score=²"): the survey with
    # nothing chosen and a line saying so, as a 400.
    notice = None if given is None or selected is not None else BAD_SCORE
    if selected is None:
        selected = survey.score
    return _html(pages.render_survey(
        product_name=runtime.settings.survey.product_name, token=request.match_info["token"],
        selected=selected, comment=survey.comment, answered=shown is Openness.ANSWERED,
        expires_at=survey.expires_at, notice=notice), 400 if notice else 200)


async def answer_survey(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    token = request.match_info["token"]
    try:
        check_declared_length(request, PAGE_BODY_LIMIT)
        survey = await runtime.store.survey(token)
        now = runtime.clock.now()
        shown = Openness.UNKNOWN if survey is None else survey.openness(now)
        if survey is None or shown is Openness.UNKNOWN:
            return _not_found()
        if shown is Openness.CLOSED:
            return _closed()
        form = await _read_form(request)  # read only for a known token
        score = _score(form.get("score"))
        raw_comment = form.get("comment")
        comment = _clean(raw_comment)[:MAX_COMMENT] if raw_comment is not None else ""
        if score is None:
            page = pages.render_survey(
                product_name=runtime.settings.survey.product_name, token=token, selected=None,
                comment=comment or survey.comment, answered=shown is Openness.ANSWERED,
                expires_at=survey.expires_at, notice=BAD_SCORE)
            return _html(page, 400)
        result = await runtime.store.answer(token, score, comment or None, now)
        if result is not AnswerResult.RECORDED:
            return _closed()
    except StoreUnavailable:
        return _unavailable()
    except BodyError as exc:
        return _body_refused(exc)
    runtime.metrics.answers.inc()
    log.info("survey.answered", survey_id=survey.id, score=score, has_comment=bool(comment))
    return _html(pages.render_thanks(product_name=runtime.settings.survey.product_name,
                                     score=score, token=token))


async def show_unsubscribe(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    try:
        survey = await runtime.store.survey(request.match_info["token"])
    except StoreUnavailable:
        return _unavailable()
    if survey is None:
        return _not_found()
    return _html(pages.render_unsubscribe(product_name=runtime.settings.survey.product_name,
                                          token=request.match_info["token"],
                                          done=survey.unsubscribed))


async def unsubscribe(request: web.Request) -> web.Response:
    """RFC 8058 one-click: any POST to the link unsubscribes, whatever the body says."""
    runtime = request.app[RUNTIME]
    try:
        check_declared_length(request, PAGE_BODY_LIMIT)
        survey = await runtime.store.survey(request.match_info["token"])
        if survey is None:
            return _not_found()
        await discard_body(request, PAGE_BODY_LIMIT,
                           runtime.settings.server.body_timeout.total_seconds())
        changed = await runtime.store.unsubscribe(survey.user_id, runtime.clock.now())
    except StoreUnavailable:
        return _unavailable()
    except BodyError as exc:
        return _body_refused(exc)
    if changed:
        log.info("survey.unsubscribed", survey_id=survey.id)
    return _html(pages.render_unsubscribe(product_name=runtime.settings.survey.product_name,
                                          token=request.match_info["token"], done=True))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/s/{token}", show_survey)
    app.router.add_post("/s/{token}", answer_survey)
    app.router.add_get("/u/{token}", show_unsubscribe)
    app.router.add_post("/u/{token}", unsubscribe)
