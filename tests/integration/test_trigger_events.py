"""Survey on an event (`survey.trigger_events`) on a moved clock, through both intake doors
(/v1/segment and the Tracking API's /v1/batch and /v1/track), with a real SMTP sink; and a
SIGHUP reload that adds an event name."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from daemon.runtime import RUNTIME
from daemon.server import reload
from tests.conftest import ADMIN, API_KEY, basic
from tests.integration import test_surveys
from tests.integration.test_surveys import NOW, Engine

engine_factory = test_surveys.engine_factory  # the same fixture: npsd and an SMTP sink

ORDER = "Order Completed"
OLD = (NOW - timedelta(days=60)).isoformat()  # older than max_delay: identify alone skips


async def track(e: Engine, user_id: str, event: str, *, door: str = "/v1/segment",
                at: Any = None) -> None:
    e.n += 1
    message = {"type": "track", "userId": user_id, "event": event,
               "messageId": f"{user_id}-t{e.n}",
               "timestamp": (at or e.clock.now()).isoformat(), "properties": {"total": 42}}
    body = {"batch": [message]} if door == "/v1/batch" else message
    response = await e.client.post(door, json=body, headers=basic())
    assert response.status == 200, await response.text()


async def test_event_schedules_at_event_time_plus_min_delay(engine_factory: Any) -> None:
    e = await engine_factory(survey={"trigger_events": [ORDER]})
    await e.identify("u1", email="ana@example.com", firstName="Ana", createdAt=OLD)
    assert (await e.user("u1"))["surveys"] == []
    await track(e, "u1", "Page Viewed")  # not listed: nothing happens
    assert (await e.user("u1"))["surveys"] == []
    await track(e, "u1", ORDER)
    [survey] = (await e.user("u1"))["surveys"]
    assert survey["state"] == "pending" and survey["due_at"].startswith("2026-03-05T10:00")
    reasons = await e.decisions("u1")
    assert f'scheduled for 2026-03-05T10:00:00Z: "{ORDER}"+3d' in reasons
    # A minute's margin: the moved clock still runs in real time, and a loaded machine can
    # take seconds between the event and this dispatch.
    e.clock.advance(timedelta(days=3) - timedelta(minutes=1))
    assert await e.dispatch() == 0
    e.clock.advance(timedelta(minutes=2))
    assert await e.dispatch() == 1
    await e.sink.wait_for(1)
    # Another order inside the interval: once per resurvey_interval, so it waits for its end.
    await track(e, "u1", ORDER)
    surveys = (await e.user("u1"))["surveys"]
    pending = [s for s in surveys if s["state"] == "pending"]
    assert len(pending) == 1 and pending[0]["due_at"].startswith("2026-09-03")  # sent + 26w
    assert any("re-survey when the 26w interval ends" in r and ORDER in r
               for r in await e.decisions("u1"))
    await e.dispatch()
    assert e.sink.count == 1


async def test_event_rules_alike_no_email_unsubscribed(engine_factory: Any) -> None:
    e = await engine_factory(survey={"trigger_events": [ORDER]})
    await track(e, "anon-only", ORDER)  # no identify, no email: no survey
    response = await e.client.get("/v1/users/anon-only/decisions",
                                  headers={"Authorization": f"Bearer {ADMIN}"})
    body = await response.json()
    assert all(d["outcome"] != "scheduled" for d in body.get("decisions", []))
    await e.identify("u2", createdAt=OLD)  # no email trait
    await track(e, "u2", ORDER)
    assert (await e.user("u2"))["surveys"] == []
    assert f'skipped: "{ORDER}": no email trait' in await e.decisions("u2")


async def test_tracking_api_batch_and_track_doors(engine_factory: Any) -> None:
    e = await engine_factory(survey={"trigger_events": [ORDER], "min_delay": "2d"})
    two_days_ago = NOW - timedelta(days=2, hours=1)
    batch = {"batch": [
        {"type": "identify", "userId": "b1", "messageId": "b1-i",
         "timestamp": two_days_ago.isoformat(), "traits": {"email": "b1@example.com",
                                                           "createdAt": OLD}},
        {"type": "track", "userId": "b1", "event": ORDER, "messageId": "b1-t",
         "timestamp": two_days_ago.isoformat()},
    ]}
    response = await e.client.post("/v1/batch", json=batch, headers=basic())
    assert response.status == 200, await response.text()
    [survey] = (await e.user("b1"))["surveys"]
    # The event's own time + 2d had passed when it arrived: due at once.
    assert survey["due_at"].startswith("2026-03-02T10:00")
    assert any(f'"{ORDER}"+2d had passed, so at once' in r for r in await e.decisions("b1"))

    await e.identify("t1", email="t1@example.com", createdAt=OLD)
    await track(e, "t1", ORDER, door="/v1/track", at=NOW - timedelta(days=1))
    [survey] = (await e.user("t1"))["surveys"]
    assert survey["due_at"].startswith("2026-03-03T10:00")  # event time + 2d
    assert await e.dispatch() == 1  # b1 only
    e.clock.advance(timedelta(days=1))
    assert await e.dispatch() == 1
    assert e.sink.count == 2


async def test_sighup_adds_a_trigger_event(engine_factory: Any, tmp_path: Path) -> None:
    e = await engine_factory()
    await e.identify("r1", email="r1@example.com", createdAt=OLD)
    await track(e, "r1", ORDER)
    assert (await e.user("r1"))["surveys"] == []  # not listed yet
    runtime = e.client.server.app[RUNTIME]
    config = tmp_path / "reload.toml"
    config.write_text(
        f'[intake]\napi_keys = ["{API_KEY}"]\n[admin]\ntoken = "{ADMIN}"\n'
        f'[survey]\ntrigger_events = [{json.dumps(ORDER)}]\n'
        f'[email]\nbackend = "smtp"\nfile_dir = "{tmp_path / "outbox"}"\n'
        f'[email.smtp]\nhost = "{e.sink.host}"\nport = {e.sink.port}\nsecurity = "none"\n'
        '[log]\nformat = "console"\nlevel = "warning"\n', encoding="utf-8")
    runtime.config_path = config
    reload(e.client.server.app)
    assert runtime.settings.survey.trigger_events == (ORDER,)
    await track(e, "r1", ORDER)
    [survey] = (await e.user("r1"))["surveys"]
    assert survey["state"] == "pending"
