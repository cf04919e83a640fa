"""Helper servers for the benchmarks, each run as its own process on 127.0.0.1:

    python bench/_servers.py bare PORT          # aiohttp endpoint that only parses JSON
    python bench/_servers.py smtp PORT COUNTFILE    # counting SMTP sink (no parsing)
    python bench/_servers.py segment PORT COUNTFILE WRITE_KEY  # counting Tracking API /batch

The counters are written to COUNTFILE (JSON) every 0.2 s and at exit (SIGTERM)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any


def _write_counts(path: Path, counts: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(counts))
    os.replace(tmp, path)


async def _run_until_term(start: Any, path: Path | None, counts: dict[str, Any]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    cleanup = await start()
    try:
        while not stop.is_set():
            if path is not None:
                _write_counts(path, counts)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)
    finally:
        if path is not None:
            _write_counts(path, counts)
        await cleanup()


# --- bare aiohttp JSON endpoint --------------------------------------------------------

def bare(port: int) -> None:
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        payload = json.loads(body)
        n = len(payload) if isinstance(payload, list) else 1
        return web.json_response({"accepted": n, "duplicates": 0, "rejected": []})

    app = web.Application(client_max_size=1 << 30)
    app.router.add_post("/v1/segment", handle)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


# --- counting SMTP sink ----------------------------------------------------------------

def smtp(port: int, path: Path) -> None:
    counts: dict[str, Any] = {"messages": 0, "bytes": 0, "connections": 0,
                              "first": None, "last": None}

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        counts["connections"] += 1
        writer.write(b"220 sink ESMTP\r\n")
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                verb = line[:4].upper()
                if verb in (b"EHLO",):
                    writer.write(b"250-sink\r\n250-8BITMIME\r\n250-SIZE 52428800\r\n"
                                 b"250 SMTPUTF8\r\n")
                elif verb == b"HELO":
                    writer.write(b"250 sink\r\n")
                elif verb == b"DATA":
                    writer.write(b"354 go ahead\r\n")
                    await writer.drain()
                    data = await reader.readuntil(b"\r\n.\r\n")
                    counts["messages"] += 1
                    counts["bytes"] += len(data)
                    now = time.time()
                    counts["first"] = counts["first"] or now
                    counts["last"] = now
                    writer.write(b"250 OK queued\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 bye\r\n")
                    await writer.drain()
                    break
                else:  # MAIL, RCPT, RSET, NOOP
                    writer.write(b"250 OK\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def start() -> Any:
        server = await asyncio.start_server(session, "127.0.0.1", port, limit=1 << 22)

        async def cleanup() -> None:
            server.close()

        return cleanup

    asyncio.run(_run_until_term(start, path, counts))


# --- counting Segment Tracking API -----------------------------------------------------

def segment(port: int, path: Path, write_key: str) -> None:
    from aiohttp import web

    expected = "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()
    counts: dict[str, Any] = {"batches": 0, "messages": 0, "bytes": 0, "by_type": {},
                              "unique_ids": 0, "max_batch": 0, "max_body": 0, "bad": 0,
                              "first": None, "last": None}
    seen: set[str] = set()

    async def handle(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != expected:
            counts["bad"] += 1
            return web.json_response({"error": "auth"}, status=401)
        body = await request.read()
        payload = json.loads(body)
        batch = payload.get("batch", [])
        if not isinstance(batch, list) or len(body) > 500 * 1024 or len(batch) > 2500:
            counts["bad"] += 1
            return web.json_response({"error": "limits"}, status=400)
        now = time.time()
        counts["first"] = counts["first"] or now
        counts["last"] = now
        counts["batches"] += 1
        counts["messages"] += len(batch)
        counts["bytes"] += len(body)
        counts["max_batch"] = max(counts["max_batch"], len(batch))
        counts["max_body"] = max(counts["max_body"], len(body))
        for m in batch:
            t = m.get("type", "?")
            counts["by_type"][t] = counts["by_type"].get(t, 0) + 1
            seen.add(m.get("messageId", ""))
        counts["unique_ids"] = len(seen)
        return web.json_response({"success": True})

    async def start() -> Any:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/v1/batch", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner.cleanup

    asyncio.run(_run_until_term(start, path, counts))


if __name__ == "__main__":
    kind = sys.argv[1]
    if kind == "bare":
        bare(int(sys.argv[2]))
    elif kind == "smtp":
        smtp(int(sys.argv[2]), Path(sys.argv[3]))
    elif kind == "segment":
        segment(int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4])
    else:
        raise SystemExit(f"unknown server {kind!r}")
