"""The recipient's language end to end: a German recipient (context.locale "de-CH") gets a
German email and German pages; an unknown locale falls back to survey.default_locale; an
operator's [survey.texts.<lang>] override wins; `npsd check-config` refuses a bad one."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.test_reload_and_stop import run_npsd
from tests.integration import test_surveys
from tests.integration.test_surveys import NOW, Engine

engine_factory = test_surveys.engine_factory  # the same fixture: npsd and an SMTP sink


async def identify(e: Engine, user_id: str, locale: str) -> None:
    e.n += 1
    await e.post({"type": "identify", "userId": user_id, "messageId": f"{user_id}-{e.n}",
                  "timestamp": NOW.isoformat(), "context": {"locale": locale},
                  "traits": {"email": f"{user_id}@example.com", "firstName": "Jonas"}})


async def test_german_recipient_gets_german_email_and_pages(engine_factory: Any) -> None:
    e = await engine_factory(survey={"max_delay": 0, "min_delay": 0})
    await identify(e, "de1", "de-CH")
    assert await e.dispatch() == 1
    [mail] = await e.sink.wait_for(1)
    assert mail["Subject"] == "Würden Sie Acme weiterempfehlen?"
    plain = mail.get_body(("plain",)).get_content()
    assert plain.startswith("Hallo Jonas,")
    assert "einem Freund oder Kollegen weiterempfehlen?" in plain
    assert '<html lang="de">' in mail.get_body(("html",)).get_content()
    token = e.token_of()
    page = await (await e.client.get(f"/s/{token}?score=9")).text()
    assert '<html lang="de">' in page
    assert "Ihre Antwort: 9 – gespeichert wird sie erst mit „Antwort senden“." in page
    thanks = await e.client.post(f"/s/{token}", data={"score": "9"})
    assert "Sie haben Acme mit 9 von 10 bewertet." in await thanks.text()
    again = await (await e.client.get(f"/s/{token}?score=3")).text()
    assert re.search(r"Danke, wir haben Ihre Antwort: 9\. Sie können sie bis zum \d+\. \w+ 2026",
                     again)
    assert "Umfragen von Acme abbestellen?" in await (await e.client.get(f"/u/{token}")).text()
    missing = await e.client.get("/s/nosuchtoken", headers={"Accept-Language": "de-DE"})
    assert missing.status == 404 and "Umfrage nicht gefunden" in await missing.text()


async def test_unknown_locale_falls_back_to_default(engine_factory: Any) -> None:
    e = await engine_factory(survey={"max_delay": 0, "min_delay": 0, "default_locale": "fr"})
    await identify(e, "xx1", "xx-YY")
    assert await e.dispatch() == 1
    [mail] = await e.sink.wait_for(1)
    assert mail["Subject"] == "Recommanderiez-vous Acme\u00a0?"
    page = await (await e.client.get(f"/s/{e.token_of()}")).text()
    assert '<html lang="fr">' in page


async def test_override_wins(engine_factory: Any) -> None:
    texts = {"de": {"subject": "{first_name}, empfiehlst du {product}?",
                    "question": "Würdest du {product} weiterempfehlen?"}}
    e = await engine_factory(survey={"max_delay": 0, "min_delay": 0, "texts": texts})
    await identify(e, "de2", "de_DE")
    assert await e.dispatch() == 1
    [mail] = await e.sink.wait_for(1)
    assert mail["Subject"] == "Jonas, empfiehlst du Acme?"
    assert "Würdest du Acme weiterempfehlen?" in mail.get_body(("plain",)).get_content()
    page = await (await e.client.get(f"/s/{e.token_of()}")).text()
    assert "Würdest du Acme weiterempfehlen?" in page
    assert "Wie wahrscheinlich" not in page
    assert "Antwort senden" in page  # texts not overridden stay German


@pytest.mark.parametrize(("text", "key", "reason"), [
    ('[survey.texts.de]\nquestoin = "Hi"\n', "survey.texts.de.questoin", "unknown key"),
    ('[survey.texts.de]\nquestion = "Hi {name}"\n', "survey.texts.de.question",
     "unknown placeholder {name}"),
    ('[survey.texts.klingon]\nquestion = "Hi"\n', "survey.texts.klingon", "unknown language"),
])
async def test_check_config_rejects_a_bad_override(tmp_path: Path, text: str, key: str,
                                                   reason: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text(text, encoding="utf-8")
    env = {"NPSD_INTAKE_API_KEYS": "", "NPSD_ADMIN_TOKEN": "", "CREDENTIALS_DIRECTORY": ""}
    code, _, err = await run_npsd("--config", str(config), "check-config", cwd=tmp_path, env=env)
    assert code != 0
    assert str(config) in err and key in err and reason in err, err
