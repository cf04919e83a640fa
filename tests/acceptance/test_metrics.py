"""/metrics, /healthz and /readyz of a running `npsd run`, as Prometheus and a load balancer
see them."""

from __future__ import annotations

import asyncio
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import basic, fixture
from tests.harness import Daemon

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(npsd: Daemon) -> tuple[Samples, dict[str, str]]:
    """Every sample by (name, sorted labels), and every family's type."""
    assert npsd.session is not None
    async with npsd.session.get(npsd.url + "/metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        text = await r.text()
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples, types


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_move_with_traffic(tmp_path: Path) -> None:
    npsd = Daemon(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'npsd.db'}")
    async with npsd:
        before, types = await scrape(npsd)
        assert types["npsd_http_requests"] == "counter"
        assert types["npsd_events_accepted"] == "counter"
        assert types["npsd_surveys"] == "gauge"
        assert types["npsd_survey_backlog"] == "gauge"

        identify, track = fixture("identify"), fixture("track")
        assert (await npsd.post_segment([identify, track, fixture("page")]))[0] == 200
        assert (await npsd.post_segment(track))[0] == 200  # a redelivery: a duplicate
        assert (await npsd.post_segment(fixture("group")))[0] == 200
        status, _ = await npsd.post_segment(fixture("track"), headers=basic("wrong-key"))
        assert status == 401
        status, _ = await npsd.post_segment([{"type": "track", "event": "no user"}])
        assert status == 200  # the batch is taken, its one bad message rejected

        after, _ = await scrape(npsd)

        def moved(name: str, **labels: str) -> float:
            return value(after, name, **labels) - value(before, name, **labels)

        requests = "npsd_http_requests_total"
        assert moved(requests, route="/v1/segment", status="200") == 4
        assert moved(requests, route="/v1/segment", status="401") == 1
        # The first scrape itself was counted too.
        assert moved(requests, route="/metrics", status="200") >= 1
        events = "npsd_events_accepted_total"
        assert moved(events, type="identify") == 1
        assert moved(events, type="track") == 1
        assert moved(events, type="page") == 1
        assert moved(events, type="group") == 1
        assert moved("npsd_events_duplicate_total") == 1
        assert moved("npsd_events_rejected_total") == 1
        # The identify with an email scheduled one survey (due at once: no createdAt).
        assert sum(v for (name, _), v in after.items() if name == "npsd_surveys") == 1

        assert npsd.session is not None
        async with npsd.session.get(npsd.url + "/healthz") as r:
            assert r.status == 200
        async with npsd.session.get(npsd.url + "/readyz") as r:
            assert r.status == 200
            assert (await r.json())["status"] == "ready"
        # Answers that no handler gave are counted too: the router's 404 and 405, and a
        # handler's refusal, under the route's template rather than the id asked for.
        async with npsd.session.get(npsd.url + "/no/such/page") as r:
            assert r.status == 404
        async with npsd.session.delete(npsd.url + "/v1/segment") as r:
            assert r.status == 405
        async with npsd.session.get(npsd.url + "/v1/users/97980cfea0067") as r:
            assert r.status == 401
        later, _ = await scrape(npsd)
        assert value(later, requests, route="unmatched", status="404") == 1
        assert value(later, requests, route="unmatched", status="405") == 1
        assert value(later, requests, route="/v1/users/{user_id}", status="401") == 1
        assert value(later, requests, route="/healthz", status="200") == 1
        assert value(later, requests, route="/readyz", status="200") >= 1
        assert await npsd.stop() == 0


async def test_malformed_http_is_counted_and_logged_as_json(tmp_path: Path) -> None:
    """A request aiohttp cannot even parse is answered 400 before any route; it is still
    counted, and aiohttp's own report of it reaches the log as one JSON line like every other
    (a log shipper must never meet a bare traceback)."""
    npsd = Daemon(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'npsd.db'}")
    async with npsd:
        for request in (b"POST /v1/segment HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
                        b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n"):
            reader, writer = await asyncio.open_connection("127.0.0.1", npsd.port)
            writer.write(request)
            status_line = await reader.readline()
            writer.close()
            assert status_line.split()[1] == b"400", status_line
        samples, _ = await scrape(npsd)
        assert value(samples, "npsd_http_requests_total", route="unmatched", status="400") == 2
        assert await npsd.stop() == 0
    assert npsd.raw_log, "npsd logged nothing"
    not_json = [line for line in npsd.raw_log if not line.startswith("{")]
    assert not_json == [], not_json[:5]
    reports = [e for e in npsd.logs if e.get("logger") == "aiohttp.server"]
    assert len(reports) == 2 and all("Traceback" in e.get("exception", "") for e in reports)
