"""How console pages are rendered and answered: daemon/templates through the one Jinja2
environment of daemon/pages.py (autoescape on: a comment `<script>` renders as text), the
console's headers (CSP `default-src 'self'`: its one stylesheet is npsd's own, no script),
and the trend chart's geometry, computed here and drawn as inline SVG by the template."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib.resources import files
from types import SimpleNamespace
from typing import Any

from aiohttp import web

from daemon.pages import render_page

HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": "default-src 'self'; form-action 'self'; base-uri 'none'; "
                               "frame-ancestors 'none'",
}
_EN = SimpleNamespace(lang="en")


def page(name: str, **values: Any) -> str:
    values.setdefault("viewer", None)
    values.setdefault("nav", "")
    return render_page(name, t=_EN, **values)


def html(body: str, status: int = 200) -> web.Response:
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8",
                        headers=HEADERS)


@functools.cache
def stylesheet() -> bytes:
    return files("daemon.templates").joinpath("console.css").read_bytes()


async def css(_request: web.Request) -> web.StreamResponse:
    return web.Response(body=stylesheet(), content_type="text/css", charset="utf-8",
                        headers={"Cache-Control": "public, max-age=3600",
                                 "X-Content-Type-Options": "nosniff"})


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    points: str  # the polyline's "x,y x,y …"
    dots: list[dict[str, Any]]
    grid: list[dict[str, Any]]  # horizontal lines at NPS -100, -50, 0, 50, 100
    labels: list[dict[str, Any]]  # a few period labels along the bottom


def chart(trend: list[dict[str, Any]], width: int = 720, height: int = 240) -> Chart:
    """NPS (-100…100) per period as a line; periods without answers are left out."""
    left, right, top, bottom = 44, 12, 12, 28
    shown = [t for t in trend if t["nps"] is not None]
    span = max(len(shown) - 1, 1)

    def x(i: int) -> float:
        return left + (width - left - right) * (i / span if len(shown) > 1 else 0.5)

    def y(nps: float) -> float:
        return top + (height - top - bottom) * (100 - nps) / 200

    dots = [{"x": round(x(i), 1), "y": round(y(t["nps"]), 1), "period": t["period"],
             "nps": t["nps"], "responses": t["responses"]} for i, t in enumerate(shown)]
    grid = [{"y": round(y(v), 1), "value": v, "x1": left, "x2": width - right}
            for v in (100, 50, 0, -50, -100)]
    step = max(1, len(shown) // 6)
    labels = [{"x": d["x"], "y": height - 8, "text": d["period"]}
              for i, d in enumerate(dots) if i % step == 0 or i == len(dots) - 1]
    return Chart(width, height, " ".join(f"{d['x']},{d['y']}" for d in dots), dots, grid,
                 labels)
