"""The survey and unsubscribe pages under malformed or oversized input: always a 4xx page
that says what to fix, never a 500, and never more than 64 KB read."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tests.conftest import bearer
from tests.hostile_clients import gzip_bomb, post_raw
from tests.integration.test_body_limits import FORM, survey_token


async def _started(make_client: Any, tmp_path: Path) -> tuple[Any, str]:
    client = await make_client(survey={"max_delay": 0})
    return client, await survey_token(client, tmp_path)


async def test_odd_digits_in_the_link_get_a_400_page_with_the_survey(
        make_client: Any, tmp_path: Path) -> None:
    client, token = await _started(make_client, tmp_path)
    for score in ("²", "٣", "١٠", "99", "-1", "x"):
        response = await client.get(f"/s/{token}?score={quote(score)}")
        assert response.status == 400, (score, response.status)
        page = await response.text()
        assert "choose a score from 0 to 10" in page and 'name="score"' in page
        assert " checked" not in page
    response = await client.get(f"/s/{token}?score=7")
    assert response.status == 200 and 'value="7" required checked' in await response.text()
    response = await client.post(f"/s/{token}", data={"score": "²"})
    assert response.status == 400 and "choose a score" in await response.text()


async def test_bad_forms_get_a_4xx_page_saying_what_to_fix(
        make_client: Any, tmp_path: Path) -> None:
    client, token = await _started(make_client, tmp_path)
    cases: list[tuple[bytes, dict[str, str], int, str]] = [
        (b"score=5", {"Content-Type": "application/x-www-form-urlencoded; charset=bogus"},
         400, "unknown charset"),
        (b"score=5", {"Content-Type": "application/x-www-form-urlencoded; charset=base64"},
         400, "unknown charset"),
        (b"score=5&comment=%FF%FE", {"Content-Type": f"{FORM['Content-Type']}; charset=idna"},
         400, "cannot be read as idna"),
        (b"\x1f\x8b\x08\x00garbage", {**FORM, "Content-Encoding": "gzip"}, 400, "gzip"),
        (b"not gzip at all", {**FORM, "Content-Encoding": "gzip"}, 400, "not valid gzip"),
        (gzip.compress(b"score=5")[:-6], {**FORM, "Content-Encoding": "gzip"}, 400, "truncated"),
        (b"score=5", {**FORM, "Content-Encoding": "compress"}, 415, "Content-Encoding"),
        (b'{"score": 5}', {"Content-Type": "application/json"}, 415,
         "application/x-www-form-urlencoded"),
        (b"score=5&" + b"&".join(b"f%d=1" % i for i in range(50)), FORM, 400,
         "too many fields"),
        (b"score=5&comment=" + b"x" * 70_000, FORM, 413, "larger than 65536"),
    ]
    for body, headers, status, says in cases:
        response = await client.post(f"/s/{token}", data=body, headers=headers)
        assert response.status == status, (headers, status, response.status)
        assert says in await response.text(), (says, await response.text())
    # Still answerable; a charset that exists is honoured.
    response = await client.post(
        f"/s/{token}", data=b"score=6&comment=caf%E9",
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=latin-1"})
    assert response.status == 200
    user = await (await client.get("/v1/users/u1", headers=bearer())).json()
    assert user["surveys"][0]["score"] == 6 and user["surveys"][0]["comment"] == "café"


async def test_a_gzip_form_bomb_is_stopped_at_64_kb(make_client: Any, tmp_path: Path) -> None:
    """The issue's 199 KB gzip form (960 MB of RSS before): a 413 page after 64 KB."""
    client, token = await _started(make_client, tmp_path)
    bomb = gzip_bomb(200)
    assert len(bomb) < 250_000
    answer = await post_raw(client.server.host, client.server.port, f"/s/{token}", bomb,
                            {**FORM, "Content-Encoding": "gzip"})
    assert answer.status == 413 and b"too large" in answer.body
    answer = await post_raw(client.server.host, client.server.port, f"/u/{token}",
                            b"x" * 70_000, FORM)
    assert answer.status == 413
    response = await client.post(f"/u/{token}", data="List-Unsubscribe=One-Click",
                                 headers=FORM)
    assert response.status == 200


async def test_admin_and_health_routes_refuse_odd_input_with_4xx(make_client: Any) -> None:
    client = await make_client()
    for path in ("/v1/nps?by=²", "/v1/nps?by=%00", "/v1/users/%ED%A0%80", "/v1/users/%00",
                 "/v1/users/" + "x" * 5000, "/v1/accounts/%00", "/v1/users/a%00b/decisions"):
        response = await client.get(path, headers=bearer())
        assert 400 <= response.status < 500, (path, response.status)
        assert "message" in await response.json()
    for path in ("/s/%00", "/u/%ED%A0%80", "/s/" + "x" * 5000):
        assert (await client.get(path)).status == 404
    for path in ("/healthz?x=%FF", "/readyz?%00", "/v1/openapi.yaml?a=²"):
        assert (await client.get(path)).status == 200
