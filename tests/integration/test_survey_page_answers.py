"""The survey page never loses an answer (HTTP level, both backends): a POST without a score
or with an over-long comment re-renders with what was typed and what to fix; a revisit
shows the saved answer; the record_on_click POST keeps the comment and is refused when off;
GET and HEAD never record."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from tests.integration import test_surveys
from tests.integration.test_surveys import Engine

engine_factory = test_surveys.engine_factory  # the same fixture: npsd and an SMTP sink


async def sent(e: Engine, user_id: str) -> str:
    await e.identify(user_id, email=f"{user_id}@example.com", firstName="Ana")
    assert await e.dispatch() == 1
    await e.sink.wait_for(1)
    return e.token_of()


async def survey(e: Engine, user_id: str) -> Any:
    return (await e.user(user_id))["surveys"][0]


async def test_missing_score_keeps_comment_and_says_so(engine_factory: Any) -> None:
    e = await engine_factory(survey={"max_delay": 0, "min_delay": 0})
    token = await sent(e, "p1")
    response = await e.client.post(f"/s/{token}", data={"comment": "Great <b>support</b>"})
    html = await response.text()
    assert response.status == 400
    assert "Please choose a score from 0 to 10, then press Send." in html
    assert ">Great &lt;b&gt;support&lt;/b&gt;</textarea>" in html
    assert (await survey(e, "p1"))["score"] is None


async def test_over_long_comment_is_refused_with_a_message(engine_factory: Any) -> None:
    e = await engine_factory(survey={"max_delay": 0, "min_delay": 0})
    token = await sent(e, "p2")
    long = "y" * 5001
    response = await e.client.post(f"/s/{token}", data={"score": "7", "comment": long})
    html = await response.text()
    assert response.status == 400
    assert "Your comment is 5,001 characters long. The limit is 5,000." in html
    assert long in html and re.search(r'value="7"[^>]*\bchecked', html)
    assert (await survey(e, "p2"))["score"] is None
    # Browsers send line ends as CRLF but count them as one against maxlength.
    exact = ("z" * 99 + "\r\n") * 50  # 5,000 characters as the browser counts them
    response = await e.client.post(f"/s/{token}", data={"score": "7", "comment": exact})
    assert response.status == 200
    saved = await survey(e, "p2")
    assert saved["score"] == 7 and len(saved["comment"]) == 4999  # the last line end trimmed


async def test_revisit_shows_the_saved_answer_not_the_links(engine_factory: Any) -> None:
    e = await engine_factory(survey={"max_delay": 0, "min_delay": 0})
    token = await sent(e, "p3")
    assert (await e.client.post(f"/s/{token}", data={"score": "3"})).status == 200
    html = await (await e.client.get(f"/s/{token}?score=10")).text()
    assert re.search(r'value="3"[^>]*\bchecked', html)
    assert not re.search(r'value="10"[^>]*\bchecked', html)
    assert "Thanks, we have your answer: 3. You can change it until" in html
    assert "Update my answer" in html and 'id="pending" hidden></p>' in html


async def test_record_on_click_post(engine_factory: Any) -> None:
    e = await engine_factory(survey={"max_delay": 0, "min_delay": 0})
    token = await sent(e, "p4")
    click = {"score": "9", "source": "click"}
    off = await e.client.post(f"/s/{token}", data=click)
    assert off.status == 403 and "record_on_click" in (await off.json())["message"]
    s = e.runtime.settings
    e.runtime.settings = replace(s, survey=replace(s.survey, record_on_click=True))
    for method in ("GET", "HEAD"):
        assert (await e.client.request(method, f"/s/{token}?score=9")).status == 200
    assert (await survey(e, "p4"))["score"] is None
    page = await (await e.client.get(f"/s/{token}?score=9")).text()
    assert 'data-record="9"' in page
    bad = await e.client.post(f"/s/{token}", data={"score": "11", "source": "click"})
    assert bad.status == 400 and "message" in await bad.json()
    ok = await e.client.post(f"/s/{token}", data=click)
    assert ok.status == 200 and (await ok.json())["saved"] is True
    assert (await survey(e, "p4"))["score"] == 9
    # Once answered, a second load (another link) does not overwrite the saved answer.
    again = await e.client.post(f"/s/{token}", data={"score": "2", "source": "click"})
    assert again.status == 409
    page = await (await e.client.get(f"/s/{token}?score=2")).text()
    assert "data-record" not in page
    assert (await survey(e, "p4"))["score"] == 9


async def test_script_is_served_same_origin(engine_factory: Any) -> None:
    e = await engine_factory()
    response = await e.client.get("/assets/survey.js")
    assert response.status == 200 and response.content_type == "text/javascript"
    page = await e.client.get("/s/unknown-token")
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert "default-src 'none'" in csp
