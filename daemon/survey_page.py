"""The pages a customer sees: the survey (GET shows, POST records) and the unsubscribe.

GET never records anything: mail scanners and link previews fetch every URL in an email."""

from __future__ import annotations

import structlog
from aiohttp import web

import daemon.pages as pages
from daemon.runtime import RUNTIME
from storage import answers
from storage.db import StoreUnavailable

log = structlog.get_logger("npsd.survey")

MAX_COMMENT = 5000
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
    if text is None or not text.strip().isdigit():
        return None
    value = int(text.strip())
    return value if 0 <= value <= 10 else None


async def show_survey(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    try:
        survey = await answers.survey_by_token(runtime.db, request.match_info["token"])
    except StoreUnavailable:
        return _unavailable()
    if survey is None:
        return _not_found()
    if survey.expired(runtime.clock.now()) or survey.state in ("pending", "sending"):
        return _closed() if survey.state not in ("pending", "sending") else _not_found()
    selected = _score(request.query.get("score"))
    if selected is None:
        selected = survey.score
    return _html(pages.render_survey(
        product_name=runtime.settings.survey.product_name, token=request.match_info["token"],
        selected=selected, comment=survey.comment, answered=survey.state == "answered",
        expires_at=survey.expires_at))


async def answer_survey(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    token = request.match_info["token"]
    try:
        survey = await answers.survey_by_token(runtime.db, token)
        if survey is None or survey.state in ("pending", "sending"):
            return _not_found()
        now = runtime.clock.now()
        if survey.expired(now):
            return _closed()
        form = await request.post()
        raw_score = form.get("score")
        score = _score(raw_score if isinstance(raw_score, str) else None)
        raw_comment = form.get("comment")
        comment = _clean(raw_comment)[:MAX_COMMENT] if isinstance(raw_comment, str) else ""
        if score is None:
            page = pages.render_survey(
                product_name=runtime.settings.survey.product_name, token=token, selected=None,
                comment=comment or survey.comment, answered=survey.state == "answered",
                expires_at=survey.expires_at)
            return _html(page, 400)
        if not await answers.record_answer(runtime.db, survey.id, score, comment or None, now):
            return _closed()
    except StoreUnavailable:
        return _unavailable()
    except ValueError:
        return _html(pages.render_error(status=400, title="That did not work",
                                        detail="The form could not be read."), 400)
    runtime.metrics.answers.inc()
    log.info("survey.answered", survey_id=survey.id, score=score, has_comment=bool(comment))
    return _html(pages.render_thanks(product_name=runtime.settings.survey.product_name,
                                     score=score, token=token))


async def show_unsubscribe(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    try:
        survey = await answers.survey_by_token(runtime.db, request.match_info["token"])
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
        survey = await answers.survey_by_token(runtime.db, request.match_info["token"])
        if survey is None:
            return _not_found()
        changed = await answers.unsubscribe(runtime.db, survey.user_id, runtime.clock.now())
    except StoreUnavailable:
        return _unavailable()
    if changed:
        log.info("survey.unsubscribed", survey_id=survey.id)
    return _html(pages.render_unsubscribe(product_name=runtime.settings.survey.product_name,
                                          token=request.match_info["token"], done=True))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/s/{token}", show_survey)
    app.router.add_post("/s/{token}", answer_survey)
    app.router.add_get("/u/{token}", show_unsubscribe)
    app.router.add_post("/u/{token}", unsubscribe)
