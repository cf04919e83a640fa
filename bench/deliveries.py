"""Webhook deliveries: N outbox rows (default 5,000) delivered by the Deliverer to a local
aiohttp receiver that answers 200; deliveries/s, next to the physical reference measured in
the same run: the same N signed POSTs from the same kind of client session, 8 at a time,
with no database (what the HTTP round trip alone allows here).

    python bench/deliveries.py [--rows N]

The rows are inserted through storage.deliveries (as the answer path writes them). Each
delivery is claimed, signed (Standard Webhooks, one secret), posted and settled; the claim
and the settle of a batch of 100 are one transaction each. In-process: the receiver, npsd's
deliverer and the reference share one event loop, as they would share a core.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp
from _common import busy_note, free_port, machine_line, tempdir
from aiohttp import web

from daemon.logging import configure_logging
from jobs.clock import SystemClock
from jobs.deliveries import CONCURRENCY, Deliverer
from jobs.webhook_signing import headers
from settings import Settings, WebhookSettings
from storage.deliveries import NewDelivery, insert_now
from storage.sql_store import SqlStore

SECRET = "whsec_" + base64.b64encode(b"bench-secret-of-thirty-two-bytes").decode()
BODY = ('{"type":"survey.answered","timestamp":"2026-12-01T09:30:12.345Z","data":{"surveyId":1,'
        '"userId":"u1","email":"u1@example.com","score":3,"comment":"' + "x" * 200 + '"}}')


async def receiver(port: int) -> tuple[web.AppRunner, list[int]]:
    count = [0]

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        count[0] += 1
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, count


async def reference(url: str, n: int) -> float:
    slots = asyncio.Semaphore(CONCURRENCY)
    async with aiohttp.ClientSession() as session:
        async def one(i: int) -> None:
            async with slots:
                h = headers((SECRET,), f"msg_{i}", datetime.now(UTC), BODY)
                async with session.post(url, data=BODY.encode(), headers=h,
                                        allow_redirects=False) as r:
                    assert r.status == 200
        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return time.perf_counter() - started


async def through_npsd(store_url: str, url: str, n: int) -> tuple[float, float]:
    clock = SystemClock()
    settings = Settings(webhooks=WebhookSettings(urls=(url,), secret=SECRET))
    async with SqlStore(store_url, clock, background=False) as store:
        started = time.perf_counter()
        async with store.db.write() as conn:
            await insert_now(conn, [NewDelivery(f"msg_{i}", "webhook", url, "survey.answered",
                                                BODY, f"u{i}", i) for i in range(n)],
                             clock.now())
        insert_s = time.perf_counter() - started
        async with aiohttp.ClientSession() as session:
            deliverer = Deliverer(store, clock, "bench", lambda: settings,
                                  lambda: None, session)  # type: ignore[arg-type,return-value]
            started = time.perf_counter()
            done = await deliverer.run_once()
            elapsed = time.perf_counter() - started
        assert done == n, done
    return insert_s, elapsed


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=5000)
    args = parser.parse_args()
    configure_logging("json", "warning")  # as a quiet daemon: one info line per delivery off
    store_url = f"sqlite+aiosqlite:///{tempdir('deliveries') / 'npsd.db'}"
    port = free_port()
    runner, count = await receiver(port)
    url = f"http://127.0.0.1:{port}/hook"
    try:
        print(machine_line())
        print(busy_note())
        ref_s = await reference(url, args.rows)
        insert_s, npsd_s = await through_npsd(store_url, url, args.rows)
        assert count[0] == 2 * args.rows
    finally:
        await runner.cleanup()
    backend = "SQLite, WAL, synchronous=FULL"
    print(f"reference: {args.rows:,} signed POSTs, {CONCURRENCY} at a time, no database: "
          f"{args.rows / ref_s:,.0f}/s")
    print(f"npsd ({backend}): {args.rows:,} rows inserted in {insert_s:.2f}s, delivered "
          f"(claim, sign, POST, settle) in {npsd_s:.2f}s: {args.rows / npsd_s:,.0f}/s, "
          f"{100 * ref_s / npsd_s:.0f}% of the reference")
    print(busy_note())


if __name__ == "__main__":
    asyncio.run(main())
