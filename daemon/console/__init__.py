"""The console for product and success teams (SPEC "Console"): server-rendered pages under
/console behind a session, and GET /v1/responses."""

from __future__ import annotations

from aiohttp import web

from daemon.console import api, book_views, render, session, views
from daemon.console.login_limit import LOGIN_LIMITER, LoginLimiter


def add_routes(app: web.Application) -> None:
    app[LOGIN_LIMITER] = LoginLimiter()
    r = app.router
    r.add_get("/console/login", session.login_form)
    r.add_post("/console/login", session.login)
    r.add_post("/console/logout", session.logout)
    r.add_get("/console/console.css", render.css)
    r.add_get("/console", views.dashboard)
    r.add_post("/console/sync", views.sync)
    r.add_get("/console/responses", views.responses)
    r.add_get("/console/responses.csv", views.responses_csv)
    r.add_get("/console/accounts", book_views.accounts)
    r.add_get("/console/accounts/{group_id}", book_views.account)
    r.add_get("/console/users", book_views.users)
    r.add_get("/console/users/{user_id}", book_views.user)
    r.add_get("/console/queue", book_views.queue)
    r.add_get("/v1/responses", api.get_responses)
