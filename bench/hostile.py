"""Hostile clients against `npsd run`: /healthz latency (p50/p99/max) while gzip bombs,
trickling bodies and idle connections arrive, and the daemon's resident memory.

    python bench/hostile.py [--rounds N] [--slow N] [--idle N]

Each round posts six 0.5 MB gzip bombs of 512 MiB (to an unknown route, to /v1/segment
without credentials and with a valid key, to a survey form), at the same time as --slow
bodies that trickle in a byte every 100 ms and --idle connections that send one request (or
none) and wait. npsd runs on SQLite with server.body_timeout = "5s" and
server.keepalive_timeout = "5s" so a round ends in seconds; everything else is the default.
The first line is the machine, the second the load on it: figures taken on a busy box are
high. Target: /healthz under 100 ms while the bombs arrive.
"""

from __future__ import annotations

import argparse
import asyncio
import email
import json
import re
import sys
import time
import urllib.request
from email.policy import default
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    API_KEY,
    busy_note,
    free_port,
    machine_line,
    start_npsd,
    table,
    tempdir,
    write_config,
)

from tests.hostile_clients import (
    Probe,
    closed_by_server,
    gzip_bomb,
    peak_rss_mb,
    post_raw,
    probing,
    request_head,
    rss_mb,
    trickle,
)

BASIC = "Basic " + __import__("base64").b64encode(f"{API_KEY}:".encode()).decode()
JSON = {"Content-Type": "application/json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def survey_token(port: int, outbox: Path) -> str:
    body = json.dumps({"type": "identify", "userId": "target", "messageId": "t-1",
                       "traits": {"email": "target@example.com"}}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/segment", data=body,
                                     headers={**JSON, "Authorization": BASIC})
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert answer.status == 200
    deadline = time.monotonic() + 60
    while not list(outbox.glob("*.eml")):
        if time.monotonic() > deadline:
            raise TimeoutError("no survey email in the outbox")
        time.sleep(0.05)
    mail = email.message_from_bytes(next(outbox.glob("*.eml")).read_bytes(), policy=default)
    part = mail.get_body(("plain",))  # type: ignore[attr-defined]
    match = re.search(r"/s/([A-Za-z0-9_-]+)\?score=", part.get_content())
    assert match is not None
    return match.group(1)


async def idle(port: int, send: bool) -> float | None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if send:
            writer.write(request_head("GET", "/healthz", {}, None))
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=30)
        return await closed_by_server(reader, timeout_s=30)
    finally:
        writer.close()


async def attack_round(port: int, token: str, slow: int, idle_count: int) -> dict[str, Any]:
    bomb = gzip_bomb(512)
    gz = {"Content-Encoding": "gzip"}
    bombs = [("/nonexistent", gz), ("/v1/segment", {**gz, **JSON}),
             ("/v1/segment", {**gz, **JSON, "Authorization": BASIC}),
             (f"/s/{token}", {**gz, **FORM}), ("/v1/segment", {**gz, **JSON}),
             ("/nonexistent", gz)]
    slow_paths = [("/v1/segment", {**JSON, "Authorization": BASIC}), (f"/s/{token}", FORM)]
    results = await asyncio.gather(
        *(post_raw("127.0.0.1", port, path, bomb, headers) for path, headers in bombs),
        *(trickle("127.0.0.1", port, *slow_paths[i % 2], 50_000, byte_every_s=0.1,
                  timeout_s=60) for i in range(slow)),
        *(idle(port, i % 2 == 0) for i in range(idle_count)))
    answers = results[:len(bombs)]
    trickled = results[len(bombs):len(bombs) + slow]
    idles = results[len(bombs) + slow:]
    return {"bombs": [a.status for a in answers],  # type: ignore[union-attr]
            "slow": sorted({a.status for a, _ in trickled}),  # type: ignore[misc]
            "slow_closed_max_s": max((c or 99 for _, c in trickled), default=0),  # type: ignore[misc]
            "idle_closed_max_s": max((c or 99 for c in idles), default=0)}  # type: ignore[type-var]


async def measure(port: int, seconds: float) -> Probe:
    async with probing("127.0.0.1", port) as probe:
        await asyncio.sleep(seconds)
    return probe


async def run(args: argparse.Namespace, port: int, pid: int, token: str) -> None:
    rss_before = rss_mb(pid)
    quiet = await measure(port, 3.0)
    rows = [["quiet (3 s)", *quiet.summary().values()]]
    outcomes = []
    async with probing("127.0.0.1", port) as probe:
        for _ in range(args.rounds):
            outcomes.append(await attack_round(port, token, args.slow, args.idle))
    rows.append([f"under attack ({args.rounds} rounds)", *probe.summary().values()])
    print(table(rows, ["phase", "healthz", "p50 ms", "p99 ms", "max ms", "failures"]))
    print("bombs: /nonexistent, /v1/segment without key, with key, /s/{token}, without key, "
          "/nonexistent; 0 = reset before the answer was read (refused unread and closed)")
    for n, outcome in enumerate(outcomes, 1):
        print(f"round {n}: bombs answered {outcome['bombs']}, slow bodies {outcome['slow']} "
              f"closed within {outcome['slow_closed_max_s']:.1f} s, idle connections closed "
              f"within {outcome['idle_closed_max_s']:.1f} s")
    print(f"RSS: {rss_before:.0f} MB before, {rss_mb(pid):.0f} MB after, "
          f"peak {peak_rss_mb(pid):.0f} MB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--slow", type=int, default=20, help="trickling bodies per round")
    parser.add_argument("--idle", type=int, default=50, help="idle connections per round")
    args = parser.parse_args()
    print(machine_line(), flush=True)
    print(busy_note(), flush=True)
    gzip_bomb(512)  # built before npsd starts: a few seconds of this process's CPU
    work = tempdir("hostile")
    port = free_port()
    config = write_config(work / "config.toml", port,
                          f"sqlite+aiosqlite:///{work / 'npsd.db'}",
                          {"server": {"body_timeout": "5s", "keepalive_timeout": "5s"},
                           "survey": {"max_delay": 0}})
    npsd = start_npsd(work, config)
    try:
        token = survey_token(port, work / "outbox")
        asyncio.run(run(args, port, npsd.pid, token))
        print("npsd still running: " + ("yes" if npsd.alive() else "NO"))
    finally:
        npsd.stop()
    print("at end: " + busy_note())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
