"""A path or method no route takes gets what every other refusal gets: a JSON `message`
(a page under /console), with `Allow` on a 405, instead of aiohttp's plain text."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.mark.parametrize(("method", "path", "status", "allow"), [
    ("GET", "/nope", 404, None),
    ("GET", "/v1/nope", 404, None),
    ("POST", "/v1/users/u1", 405, "DELETE, GET, HEAD"),
    ("DELETE", "/healthz", 405, "GET, HEAD"),
    ("GET", "/v1/segment", 405, "POST"),
    ("PUT", "/v1/batch", 405, "POST"),
])
async def test_unknown_paths_and_methods_answer_json(make_client: Any, method: str, path: str,
                                                     status: int, allow: str | None) -> None:
    client = await make_client()
    response = await client.request(method, path)
    assert response.status == status and response.content_type == "application/json"
    assert response.headers.get("Allow") == allow
    message = (await response.json())["message"]
    assert path in message and (allow is None or allow in message)


async def test_an_unknown_console_path_is_a_page(make_client: Any) -> None:
    client = await make_client()
    response = await client.get("/console/nope")
    assert response.status == 404 and response.content_type == "text/html"
    assert "no such path: /console/nope" in await response.text()
